"""GANSpace: validated PCA loading and PTI's "set the coordinate" edits on a layer range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from editing_directions.errors import DirectionFileError, LatentShapeError
from editing_directions.ganspace import GANSPACE_EDITS, GanspaceEdit, GanspacePCA, apply_ganspace, \
    component_coordinate, load_pca

W_DIM, NUM_COMPONENTS = 32, 60


def random_pca(seed: int = 0) -> dict[str, torch.Tensor]:
    """A PCA dict in the release's layout (mean [1, D], comp [K, 1, D] unit rows, std [K])."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.randn(NUM_COMPONENTS, 1, W_DIM, generator=g)
    return {"mean": torch.randn(1, W_DIM, generator=g), "comp": comp / comp.norm(dim=2, keepdim=True),
            "std": torch.rand(NUM_COMPONENTS, generator=g) + 0.5}


@pytest.fixture()
def pca(tmp_path) -> GanspacePCA:
    """A random PCA loaded through `load_pca`."""
    torch.save(random_pca(), tmp_path / "ffhq_pca.pt")
    return load_pca(tmp_path / "ffhq_pca.pt")


def test_pti_edits_are_the_released_ones():
    spec = {(e.name, e.component, e.first_layer, e.end_layer, e.default) for e in GANSPACE_EDITS}
    assert spec == {("eye_openness", 54, 7, 8, 5.0), ("smile", 46, 4, 5, -6.0), ("trimmed_beard", 58, 7, 9, 7.0)}
    assert all(e.min <= e.default <= e.max for e in GANSPACE_EDITS)


def test_edit_matches_the_formula_computed_independently(pca):
    edit = GanspaceEdit("test", "Test", component=13, first_layer=2, end_layer=5, default=0.0)
    w = torch.randn(3, 8, W_DIM)
    edited = apply_ganspace(w, pca, edit, 4.0)

    raw = {k: v.double().numpy() for k, v in random_pca().items()}
    c, s = raw["comp"][13, 0], raw["std"][13]
    expected = w.double().numpy().copy()
    for n in range(3):
        coord = np.dot(expected[n, 0] - raw["mean"][0], c) / s
        expected[n, 2:5] += (4.0 - coord) * c * s
    assert np.abs(edited.double().numpy() - expected).max() < 1e-5


def test_edit_sets_the_coordinate_of_a_w_pivot_on_its_layers_only(pca):
    edit = GANSPACE_EDITS[2]  # trimmed beard: layers 7..8
    w = torch.randn(2, 1, W_DIM).repeat(1, 10, 1)  # a W pivot broadcast to W+
    edited = apply_ganspace(w, pca, edit, 7.0)
    for layer in range(10):
        coordinate = component_coordinate(edited[:, layer:layer + 1], pca, edit.component)
        if layer in (7, 8):
            assert torch.allclose(coordinate, torch.full((2,), 7.0), atol=1e-4)
        else:
            assert torch.equal(edited[:, layer], w[:, layer])


def test_value_equal_to_the_current_coordinate_is_the_identity(pca):
    w = torch.randn(2, 8, W_DIM)
    for edit in GANSPACE_EDITS:
        coordinate = component_coordinate(w, pca, edit.component)
        assert coordinate.shape == (2,)
        for n in range(2):
            assert torch.allclose(apply_ganspace(w[n:n + 1], pca, edit, coordinate[n].item()), w[n:n + 1], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("std"), "'mean', 'comp' and 'std'"),
        (lambda d: d.update(mean=torch.zeros(W_DIM)), r"'mean' should have shape \[1, D\]"),
        (lambda d: d.update(comp=torch.zeros(NUM_COMPONENTS, W_DIM)), r"'comp' should have shape \[K, 1, 32\]"),
        (lambda d: d.update(std=torch.ones(3)), r"'std' should have shape \[60\]"),
        (lambda d: d.update(std=-torch.ones(NUM_COMPONENTS)), "positive"),
        (lambda d: d["comp"].__setitem__((0, 0, 0), float("inf")), "NaN or infinite"),
    ],
)
def test_bad_pca_files_are_refused(tmp_path, change, message):
    content = random_pca()
    change(content)
    torch.save(content, tmp_path / "pca.pt")
    with pytest.raises(DirectionFileError, match=message):
        load_pca(tmp_path / "pca.pt")


def test_corrupt_pca_file_and_bad_codes_are_refused(tmp_path, pca):
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(DirectionFileError, match="corrupt"):
        load_pca(tmp_path / "corrupt.pt")
    with pytest.raises(LatentShapeError, match="only 4 layers"):
        apply_ganspace(torch.randn(1, 4, W_DIM), pca, GANSPACE_EDITS[0], 1.0)
    with pytest.raises(LatentShapeError, match=r"\(N, L, 32\)"):
        apply_ganspace(torch.randn(1, 8, 16), pca, GANSPACE_EDITS[0], 1.0)
    with pytest.raises(DirectionFileError, match="component 70 does not exist"):
        component_coordinate(torch.randn(1, 8, W_DIM), pca, 70)
