"""GANSpace: validated PCA loading and PTI's "set the coordinate" edits on a layer range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from editing_directions.errors import DirectionFileError, LatentShapeError
from editing_directions.ganspace import GANSPACE_EDITS, GanspaceEdit, GanspacePCA, apply_ganspace, \
    component_coordinate, load_pca, validate_pca

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


def test_validate_pca_names_the_field_and_the_source():
    good = random_pca()
    for field in ("mean", "comp", "std"):
        for bad in (good[field].to(torch.int64), good[field].tolist()):
            with pytest.raises(DirectionFileError, match=f"^PCA: '{field}' should be a floating-point tensor$"):
                validate_pca(**{**good, field: bad})
    with pytest.raises(DirectionFileError, match="^my file: every 'std' must be positive"):
        validate_pca(**{**good, "std": torch.zeros(NUM_COMPONENTS)}, source="my file")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mean", torch.ones(2, W_DIM), r"'mean' should have shape \[1, D\], found \(2, 32\)"),
        ("mean", torch.ones(1, 1, W_DIM), r"'mean' should have shape \[1, D\], found \(1, 1, 32\)"),
        ("mean", torch.ones(1, 0), r"'mean' should have shape \[1, D\], found \(1, 0\)"),
        ("comp", torch.ones(NUM_COMPONENTS, 1, W_DIM + 1),
         r"'comp' should have shape \[K, 1, 32\], found \(60, 1, 33\)"),
        ("comp", torch.ones(NUM_COMPONENTS, 2, W_DIM), r"'comp' should have shape \[K, 1, 32\], found \(60, 2, 32\)"),
        ("std", torch.ones(NUM_COMPONENTS, 1), r"'std' should have shape \[60\], found \(60, 1\)"),
    ],
)
def test_validate_pca_refuses_each_wrong_shape(field, value, message):
    with pytest.raises(DirectionFileError, match=message):
        validate_pca(**{**random_pca(), field: value})


def test_empty_pca_and_zero_std_are_refused_and_a_one_component_one_wide_pca_is_valid():
    with pytest.raises(DirectionFileError, match=r"'comp' should have shape \[K, 1, 32\], found \(0, 1, 32\)"):
        validate_pca(torch.zeros(1, W_DIM), torch.zeros(0, 1, W_DIM), torch.zeros(0))
    std = torch.rand(NUM_COMPONENTS) + 0.5
    std[7] = 0.0
    with pytest.raises(DirectionFileError, match="every 'std' must be positive"):
        validate_pca(**{**random_pca(), "std": std})
    tiny = validate_pca(torch.tensor([[0.5]], dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64),
                        torch.tensor([2.0], dtype=torch.float64))
    assert (tiny.num_components, tiny.w_dim) == (1, 1)
    assert {tiny.mean.dtype, tiny.comp.dtype, tiny.std.dtype} == {torch.float32}
    # coordinate of 4.5 along the one component: (4.5 - 0.5) * 1 / 2 = 2
    assert component_coordinate(torch.full((1, 3, 1), 4.5), tiny, 0).tolist() == [2.0]


def test_load_pca_messages_name_the_file_and_what_it_should_be(tmp_path):
    content = random_pca()
    content["mean"] = torch.zeros(W_DIM)
    torch.save(content, tmp_path / "bad_mean.pt")
    with pytest.raises(DirectionFileError, match=f"^{tmp_path / 'bad_mean.pt'}: 'mean' should have shape"):
        load_pca(tmp_path / "bad_mean.pt")
    with pytest.raises(DirectionFileError, match="GANSpace PCA file not found"):
        load_pca(tmp_path / "absent.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(DirectionFileError, match="unreadable or corrupt GANSpace PCA file"):
        load_pca(tmp_path / "corrupt.pt")
    torch.save([content["comp"]], tmp_path / "list.pt")
    with pytest.raises(DirectionFileError, match="list.pt: expected a dict with 'mean', 'comp' and 'std'"):
        load_pca(tmp_path / "list.pt")


def test_component_indices_from_zero_to_k_minus_one_only(pca):
    w = torch.randn(2, 8, W_DIM)
    raw = {k: v.double().numpy() for k, v in random_pca().items()}
    for component in (0, NUM_COMPONENTS - 1):
        expected = (w[:, 0].double().numpy() - raw["mean"][0]) @ raw["comp"][component, 0] / raw["std"][component]
        np.testing.assert_allclose(component_coordinate(w, pca, component).numpy(), expected, rtol=1e-4, atol=1e-5)
    for component in (-1, NUM_COMPONENTS):
        with pytest.raises(DirectionFileError, match=f"component {component} does not exist: the PCA has 60 comp"):
            component_coordinate(w, pca, component)


def test_an_edit_starting_at_the_last_layer_plus_one_is_refused(pca):
    beard = GANSPACE_EDITS[2]  # layers 7..8
    with pytest.raises(LatentShapeError, match=r"'trimmed_beard' changes W\+ layers 7\.\.8, but the code has only 7"):
        apply_ganspace(torch.randn(1, 7, W_DIM), pca, beard, 1.0)
    edited = apply_ganspace(torch.zeros(1, 8, W_DIM), pca, beard, 1.0)  # layer 7 exists: edited, 8 is beyond
    assert torch.count_nonzero(edited[:, :7]) == 0 and torch.count_nonzero(edited[:, 7]) > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_codes_of_other_dtypes_are_edited_in_their_dtype(pca, dtype):
    edit = GANSPACE_EDITS[1]  # smile: component 46, layer 4
    w = torch.randn(2, 8, W_DIM, generator=torch.Generator().manual_seed(3))
    raw = {k: v.double().numpy() for k, v in random_pca().items()}
    c, s = raw["comp"][46, 0], raw["std"][46]
    coordinate = (w[:, 0].double().numpy() - raw["mean"][0]) @ c / s
    expected = w.double().numpy().copy()
    expected[:, 4] += (-6.0 - coordinate)[:, None] * c * s
    tolerance = 1e-9 if dtype == torch.float64 else 2e-2
    got = component_coordinate(w.to(dtype), pca, 46)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), coordinate, rtol=tolerance, atol=tolerance)
    edited = apply_ganspace(w.to(dtype), pca, edit, -6.0)
    assert edited.dtype == dtype
    np.testing.assert_allclose(edited.double().numpy(), expected, rtol=tolerance, atol=tolerance)
