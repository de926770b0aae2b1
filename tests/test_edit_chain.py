"""The edit chain on the tiny generator: by-hand equality, order, identity, errors, JSON replay, batched rendering."""
from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from editing_directions import Edit, EditChain, EditLibrary, demo_library
from editing_directions.chain import as_wplus
from editing_directions.errors import EditStrengthError, EditSyntaxError, LatentShapeError, UnknownEditError
from editing_directions.ganspace import GANSPACE_EDITS
from editing_directions.styleclip import random_levels_mapper


@pytest.fixture()
def library(tiny_generator):
    """Seeded random demo edits matching the tiny generator (w_dim 32, 8 W+ layers)."""
    return demo_library(tiny_generator.w_dim, tiny_generator.num_ws, seed=0)


@pytest.fixture()
def pivot(tiny_generator) -> torch.Tensor:
    """A W+ pivot (1, 8, 32) from the tiny generator's mapping network."""
    z = torch.randn(1, tiny_generator.z_dim, generator=torch.Generator().manual_seed(7))
    return tiny_generator.mapping(z, None)


def test_edit_text_form_parses_and_round_trips():
    assert Edit.parse("smile=2") == Edit("interfacegan", "smile", 2.0)
    assert Edit.parse(" ganspace : smile = -6 ") == Edit("ganspace", "smile", -6.0)
    assert Edit.parse("styleclip:afro=0.1") == Edit("styleclip", "afro", 0.1)
    for edit in (Edit("styleclip", "afro", 0.1), Edit("ganspace", "trimmed_beard", 7), Edit("interfacegan", "age", -1)):
        assert Edit.parse(edit.to_text()) == edit
    assert [Edit.parse(t).slug for t in ("smile=2", "age=-1", "ganspace:smile=-6", "styleclip:afro=0.1")] == \
        ["smile+2", "age-1", "ganspace-smile-6", "styleclip-afro+0.1"]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("smile", EditSyntaxError, "expected \\[kind:\\]name=strength"),
        ("smile=", EditSyntaxError, "expected"),
        ("=2", EditSyntaxError, "name is empty"),
        ("styleclip:=0.1", EditSyntaxError, "name is empty"),
        ("smile=two", EditSyntaxError, "'two' is not a number"),
        ("warp:smile=1", UnknownEditError, "unknown edit kind 'warp'"),
        ("smile=nan", EditStrengthError, "finite"),
    ],
)
def test_bad_edit_text_is_refused(text, error, message):
    with pytest.raises(error, match=message):
        Edit.parse(text)


def test_chain_equals_applying_the_edits_by_hand(library, pivot):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_1", 0.1),
                                Edit("ganspace", "smile", -6.0), Edit("interfacegan", "age", -1.0)])
    steps = chain.steps(pivot)

    w1 = pivot + 2.0 * library.direction("smile")
    w2 = w1 + 0.1 * library.mapper("demo_1")(w1)
    pca, spec = library.pca(), GANSPACE_EDITS[1]
    c, s = pca.comp[spec.component, 0].double().numpy(), pca.std[spec.component].item()
    w3 = w2.double().numpy().copy()
    coordinate = np.dot(w3[0, 0] - pca.mean[0].double().numpy(), c) / s
    w3[0, spec.first_layer:spec.end_layer] += (-6.0 - coordinate) * c * s
    w4 = torch.from_numpy(w3).float() - 1.0 * library.direction("age")

    assert len(steps) == 5 and torch.equal(steps[0], pivot)
    for got, expected in zip(steps[1:], (w1, w2, torch.from_numpy(w3).float(), w4)):
        assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(chain.apply(pivot), steps[-1])


def test_order_matters_for_a_mapper_and_a_direction(library, pivot, tiny_generator):
    mapper_first = EditChain(library, [Edit("styleclip", "demo_1", 0.2), Edit("interfacegan", "smile", 3.0)])
    direction_first = EditChain(library, [Edit("interfacegan", "smile", 3.0), Edit("styleclip", "demo_1", 0.2)])
    a, b = mapper_first.apply(pivot), direction_first.apply(pivot)
    assert (a - b).abs().max() > 1e-2  # the mapper sees the code that the edits before it produced
    images_a = mapper_first.render_tensor(tiny_generator, pivot)
    images_b = direction_first.render_tensor(tiny_generator, pivot)
    assert (images_a[-1] - images_b[-1]).abs().max() > 1e-3


def test_order_matters_for_ganspace_after_a_direction(library, pivot):
    ganspace_first = EditChain(library, [Edit("ganspace", "smile", 3.0), Edit("interfacegan", "age", 2.0)])
    direction_first = EditChain(library, [Edit("interfacegan", "age", 2.0), Edit("ganspace", "smile", 3.0)])
    assert (ganspace_first.apply(pivot) - direction_first.apply(pivot)).abs().max() > 1e-3


def test_strength_zero_leaves_the_image_unchanged(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "pose", 0.0), Edit("styleclip", "demo_2", 0.0)])
    # a GANSpace strength is a target coordinate: the identity is the code's current coordinate
    coordinate = library.ganspace_coordinate("eye_openness", pivot).item()
    assert -10 <= coordinate <= 10
    chain.append(Edit("ganspace", "eye_openness", coordinate))
    images = chain.render_tensor(tiny_generator, pivot)
    assert images.shape == (4, 3, 32, 32)
    for step in range(1, 4):
        assert torch.equal(images[step], images[0])
    # and a nonzero strength does change it
    chain.replace(0, Edit("interfacegan", "pose", 1.0))
    assert not torch.equal(chain.render_tensor(tiny_generator, pivot)[1], images[0])


def test_unknown_and_out_of_range_edits_are_refused(library):
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    with pytest.raises(UnknownEditError, match="unknown interfacegan edit 'mohawk'; available: age, smile, pose"):
        chain.append(Edit("interfacegan", "mohawk", 1.0))
    with pytest.raises(UnknownEditError, match="unknown styleclip edit 'afro'; available: demo_1, demo_2"):
        chain.append(Edit("styleclip", "afro", 0.1))
    with pytest.raises(EditStrengthError, match=r"strength 3.5 is outside the allowed range \[-3, 3\]"):
        chain.append(Edit("interfacegan", "smile", 3.5))
    with pytest.raises(EditStrengthError, match=r"\[0, 0.3\]"):
        chain.append(Edit("styleclip", "demo_1", -0.1))
    with pytest.raises(EditStrengthError, match=r"\[-10, 10\]"):
        chain.replace(0, Edit("ganspace", "smile", -12.0))
    assert chain.edits == (Edit("interfacegan", "age", 1.0),)


def test_drop_reorder_and_clear(library):
    a, b, c = Edit("interfacegan", "age", 1.0), Edit("styleclip", "demo_1", 0.1), Edit("ganspace", "smile", -6.0)
    chain = EditChain(library, [a, b, c])
    chain.move(0, 2)
    assert chain.edits == (b, c, a)
    chain.move(-1, 0)
    assert chain.edits == (a, b, c)
    assert chain.remove(1) == b and chain.edits == (a, c)
    with pytest.raises(IndexError, match="edit index 2 is out of range for a chain of 2 edits"):
        chain.remove(2)
    chain.clear()
    assert len(chain) == 0


def test_json_replays_the_same_steps(library, pivot):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_2", 0.15),
                                Edit("ganspace", "trimmed_beard", 7.0)])
    replayed = EditChain.from_json(chain.to_json(), library)
    assert replayed.edits == chain.edits
    for got, expected in zip(replayed.steps(pivot), chain.steps(pivot)):
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("{not json", EditSyntaxError, "not valid JSON"),
        ('{"edits": []}', EditSyntaxError, "format 'pti-edit-chain'"),
        ('{"format": "pti-edit-chain", "version": 9, "edits": []}', EditSyntaxError, "version 9"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "interfacegan", "name": "age"}]}',
         EditSyntaxError, "edit 0 should be an object"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "x", "name": "age", "strength": 1}]}',
         UnknownEditError, "edit 0: unknown edit kind 'x'"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "interfacegan", "name": "age", '
         '"strength": 9}]}', EditStrengthError, "outside the allowed range"),
    ],
)
def test_bad_chain_json_is_refused(library, text, error, message):
    with pytest.raises(error, match=message):
        EditChain.from_json(text, library)


def test_render_returns_one_image_per_step_from_one_generator_call(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_1", 0.1),
                                Edit("interfacegan", "age", -1.0), Edit("ganspace", "smile", -6.0)])
    batch_sizes = []
    hook = tiny_generator.synthesis.register_forward_hook(lambda module, args, out: batch_sizes.append(len(out)))
    try:
        images = chain.render_tensor(tiny_generator, pivot)
        assert batch_sizes == [5]
        chunked = chain.render_tensor(tiny_generator, pivot, batch_size=2)
        assert batch_sizes[1:] == [2, 2, 1]
    finally:
        hook.remove()
    separate = torch.cat([tiny_generator.synthesis(w, noise_mode="const") for w in chain.steps(pivot)])
    assert torch.allclose(images, separate, atol=1e-5)
    assert torch.allclose(chunked, images, atol=1e-5)

    pictures = chain.render(tiny_generator, pivot)
    assert len(pictures) == 5 and all(p.size == (32, 32) and p.mode == "RGB" for p in pictures)


def test_a_w_pivot_is_broadcast_to_every_layer(library, tiny_generator):
    w = torch.randn(1, tiny_generator.w_dim)
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    broadcast = chain.render_tensor(tiny_generator, w)
    explicit = chain.render_tensor(tiny_generator, w[:, None].repeat(1, tiny_generator.num_ws, 1))
    assert torch.equal(broadcast, explicit)
    with pytest.raises(LatentShapeError, match=r"W\+ code \(N, 8, D\)"):
        as_wplus(torch.randn(1, 5, 32), 8)
    with pytest.raises(LatentShapeError, match="one pivot at a time"):
        chain.render_tensor(tiny_generator, torch.randn(2, 32))


def test_demo_library_is_labelled_random_and_checks_codes(library):
    assert "random" in library.description.lower()
    assert all("random demo" in option.label.lower() for option in library.options())
    assert {o.key for o in library.options()} == {
        "interfacegan:age", "interfacegan:smile", "interfacegan:pose", "ganspace:eye_openness", "ganspace:smile",
        "ganspace:trimmed_beard", "styleclip:demo_1", "styleclip:demo_2"}
    for name in ("age", "smile", "pose"):
        assert math.isclose(library.direction(name).norm().item(), 1.0, rel_tol=1e-5)
    with pytest.raises(LatentShapeError, match="for 8 W\\+ layers; the code has 18"):
        library.apply(Edit("interfacegan", "age", 1.0), torch.randn(1, 18, 32))
    with pytest.raises(LatentShapeError, match=r"\(N, L, 32\), got \(1, 8, 512\)"):
        library.apply(Edit("interfacegan", "age", 1.0), torch.randn(1, 8, 512))
    # the same seed gives the same edits
    again = demo_library(32, 8, seed=0)
    assert torch.equal(again.direction("smile"), library.direction("smile"))
    assert not torch.equal(demo_library(32, 8, seed=1).direction("smile"), library.direction("smile"))


# ---------------------------------------------------------------------------------------------------------
# The library over real file layouts: a pre-filled Hub cache, local folders, lazy loading


INVERSION_SPACE = "spaces--DragGan--DragGan-Inversion"  # WEIGHTS.md: DragGan/DragGan-Inversion, a Space
MAPPER_SPACE = "spaces--ethanNeuralImage--inversion_testing"
DIRECTION_PATHS = {"age": "PTI/editings/interfacegan_directions/age.pt",
                   "smile": "PTI/editings/interfacegan_directions/smile.pt",
                   "rotation": "PTI/editings/interfacegan_directions/rotation.pt"}
PCA_PATH = "PTI/editings/ganspace_pca/ffhq_pca.pt"
AFRO_PATH = "pretrained_models/styleCLIP_mappers/afro_hairstyle.pt"


def pinned_commit(key: str) -> str:
    """The commit the registry pins `key`'s repository to."""
    from pti.weights import REGISTRY

    return REGISTRY[key].revision


def put_in_hub_cache(cache, repo_folder: str, path: str, value: object, commit: str):
    """torch.save `value` where huggingface_hub keeps `path` of a repo at `commit` (refs/main points there too)."""
    (cache / repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (cache / repo_folder / "refs" / "main").write_text(commit)
    target = cache / repo_folder / "snapshots" / commit / path
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, target)
    return hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An offline Hub cache holding 32-dim fakes at the released paths, and a registry with their sha256."""
    from huggingface_hub import constants as hf_constants

    from pti.weights import REGISTRY

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti-cache"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    cache = tmp_path / "hf"
    g = torch.Generator().manual_seed(5)
    values = {name: torch.randn(1, 32, generator=g) for name in DIRECTION_PATHS}
    comp = torch.randn(80, 1, 32, generator=g)
    values["pca"] = {"mean": torch.randn(1, 32, generator=g), "comp": comp / comp.norm(dim=2, keepdim=True),
                     "std": torch.rand(80, generator=g) + 0.5}
    afro = random_levels_mapper(32, seed=6, no_fine_mapper=True)
    values["afro"] = afro
    inversion_commit, mapper_commit = pinned_commit("ganspace-ffhq-pca"), pinned_commit("styleclip-afro-hairstyle")
    sha = {name: put_in_hub_cache(cache, INVERSION_SPACE, path, values[name], inversion_commit)
           for name, path in DIRECTION_PATHS.items()}
    sha["pca"] = put_in_hub_cache(cache, INVERSION_SPACE, PCA_PATH, values["pca"], inversion_commit)
    sha["afro"] = put_in_hub_cache(cache, MAPPER_SPACE, AFRO_PATH, {
        "state_dict": {f"mapper.{k}": v for k, v in afro.state_dict().items()} | {"decoder.w": torch.zeros(4)},
        "opts": {"no_fine_mapper": True}}, mapper_commit)
    keys = {"age": "interfacegan-age", "smile": "interfacegan-smile", "rotation": "interfacegan-rotation",
            "pca": "ganspace-ffhq-pca", "afro": "styleclip-afro-hairstyle"}
    registry = dict(REGISTRY) | {key: dataclasses.replace(REGISTRY[key], sha256=sha[name], size=None)
                                 for name, key in keys.items()}
    return {"cache": cache, "registry": registry, "values": values}


def test_library_loads_every_kind_from_the_hub_cache_layout(hub_cache):
    library = EditLibrary.from_registry(cache_dir=hub_cache["cache"], registry=hub_cache["registry"], progress=False)
    values = hub_cache["values"]
    assert torch.equal(library.direction("pose"), values["rotation"][0])  # pose is the rotation.pt file
    assert torch.equal(library.direction("age"), values["age"][0])
    assert torch.equal(library.pca().comp, values["pca"]["comp"])
    w = torch.randn(1, 8, 32)
    assert torch.allclose(library.mapper("afro")(w), values["afro"](w))
    labels = {o.name: o.label for o in library.options("styleclip")}
    assert labels["afro"] == "Afro hairstyle" and len(labels) == 10
    chain = EditChain(library, [Edit.parse("smile=1"), Edit.parse("styleclip:afro=0.1"), Edit.parse("ganspace:smile=-6")])
    assert len(chain.steps(w)) == 4


def test_the_real_sha256_rejects_the_fake_files_and_each_file_loads_alone(hub_cache):
    from pti.weights import WeightsError

    real = EditLibrary.from_registry(cache_dir=hub_cache["cache"], progress=False)  # the real registry's sha256
    with pytest.raises(WeightsError, match="interfacegan-age: .* rejected \\(not used\\)"):
        real.direction("age")

    (hub_cache["cache"] / INVERSION_SPACE / "snapshots" / pinned_commit("interfacegan-smile") /
     DIRECTION_PATHS["smile"]).unlink()
    library = EditLibrary.from_registry(cache_dir=hub_cache["cache"], registry=hub_cache["registry"], progress=False)
    assert library.direction("age").shape == (32,)  # fetched alone, though smile.pt is missing
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set and the file is not in the cache"):
        library.direction("smile")


def test_local_folders_are_read_lazily_and_cached(tmp_path):
    from pti.weights import WeightsError

    directions, mappers = tmp_path / "directions", tmp_path / "mappers"
    directions.mkdir()
    mappers.mkdir()
    torch.save(torch.randn(1, 32), directions / "age.pt")
    for stem in ("purple_hair", "Curly Hair", "afro"):
        state = random_levels_mapper(32, seed=len(stem)).state_dict()
        torch.save({"state_dict": {f"mapper.{k}": v for k, v in state.items()}, "opts": {}}, mappers / f"{stem}.pt")
    (mappers / "notes.txt").write_text("not a mapper")

    library = EditLibrary.from_registry(directions_dir=directions, mapper_dir=mappers)
    styleclip_options = {o.name: o.label for o in library.options("styleclip")}
    assert styleclip_options["purple_hair"] == "Purple hair" and styleclip_options["curly_hair"] == "Curly Hair"
    assert styleclip_options["bob"] == "Bob hairstyle"  # the default hairstyles stay on offer
    assert styleclip_options["afro"] == "Afro"  # a folder mapper replaces the default of the same name
    assert len(styleclip_options) == 12

    age = library.direction("age")
    (directions / "age.pt").unlink()
    assert torch.equal(library.direction("age"), age)  # loaded once, then kept
    with pytest.raises(WeightsError, match="file not found: .*smile.pt"):  # only now, on first use, is smile.pt looked for
        library.direction("smile")
    assert library.mapper("afro").latent_dim == 32  # from the folder, not the Hub


def test_mappers_of_a_user_hub_repo_are_listed_then_fetched_on_use(hub_cache, monkeypatch):
    import huggingface_hub

    mapper = random_levels_mapper(32, seed=8)
    put_in_hub_cache(hub_cache["cache"], "models--someone--mappers", "mappers/mohawk.pt",
                     {"state_dict": {f"mapper.{k}": v for k, v in mapper.state_dict().items()}, "opts": {}},
                     "0123456789abcdef" * 2 + "01234567")  # a user's repo on its main branch
    listing = ["README.md", "mappers/mohawk.pt", "encoders/e4e.pt"]
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, **kwargs: listing)

    library = EditLibrary.from_registry(mapper_repo="someone/mappers", mapper_subfolder="mappers",
                                        default_mappers=False, cache_dir=hub_cache["cache"], progress=False)
    assert [(o.name, o.label) for o in library.options("styleclip")] == [("mohawk", "Mohawk")]
    w = torch.randn(1, 8, 32)
    assert torch.equal(library.mapper("mohawk")(w), mapper(w))


@pytest.mark.gpu
def test_render_on_cuda_matches_the_cpu(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_1", 0.1),
                                Edit("ganspace", "smile", -6.0)])
    on_cpu = chain.render_tensor(tiny_generator, pivot, force_fp32=True)
    G_cuda = tiny_generator.to("cuda")  # the fixture is a fresh copy per test
    on_cuda = chain.render_tensor(G_cuda, pivot.to("cuda"), force_fp32=True)
    assert on_cuda.device.type == "cuda"
    assert torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# render_tensor's contract in detail (mutmut survivors)


class SynthesisOnly(torch.nn.Module):
    """A generator whose synthesis takes only (ws, noise_mode, force_fp32), as the chain's contract allows; it
    records each call's batch size and flags, then renders with the tiny generator."""

    def __init__(self, G):
        super().__init__()
        self.G, self.num_ws, self.calls = G, G.num_ws, []

    def synthesis(self, ws, noise_mode="random", force_fp32=False):
        self.calls.append((len(ws), noise_mode, force_fp32))
        return self.G.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)


def test_render_passes_its_flags_to_a_synthesis_without_style_offsets(library, pivot, tiny_generator):
    G = SynthesisOnly(tiny_generator)
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0)])
    chain.render_tensor(G, pivot)
    chain.render_tensor(G, pivot, force_fp32=True, noise_mode="none", batch_size=1)
    assert G.calls == [(2, "const", False), (1, "none", True), (1, "none", True)]


def test_a_long_chain_still_renders_in_one_call_and_batch_size_is_checked(library, pivot, tiny_generator):
    G = SynthesisOnly(tiny_generator)
    chain = EditChain(library, [Edit("interfacegan", "age", 0.1 * step) for step in range(1, 10)])
    assert chain.render_tensor(G, pivot).shape == (10, 3, 32, 32)  # more steps than the 8 W+ layers
    assert G.calls == [(10, "const", False)]
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        chain.render_tensor(G, pivot, batch_size=0)


def test_render_converts_the_pivot_to_float32_before_the_edits(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("interfacegan", "age", -1.3)])
    w = pivot.double() + 1e-3  # not exactly a float32 value
    w32 = w.float()
    codes = torch.cat([w32, w32 + 2.0 * library.direction("smile"),
                       w32 + 2.0 * library.direction("smile") - 1.3 * library.direction("age")])
    assert torch.equal(chain.render_tensor(tiny_generator, w), tiny_generator.synthesis(codes, noise_mode="const"))


def test_render_moves_the_pivot_to_the_generators_device(library, pivot):
    class OnMeta(torch.nn.Module):
        """A generator on another device than the pivot's (meta: no GPU needed) that records what it is given."""

        num_ws = 8

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))

        def synthesis(self, ws, noise_mode="random", force_fp32=False):
            self.given = ws
            return torch.zeros(len(ws), 3, 4, 4, device=self.weight.device)

    G = OnMeta()
    EditChain(library, [Edit("interfacegan", "smile", 2.0)]).render_tensor(G, pivot)
    assert G.given.device.type == "meta" and G.given.shape == (2, 8, 32)


def test_render_passes_its_options_on(library, pivot, tiny_generator):
    from pti.images import tensor_to_pil

    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0)])
    pictures = chain.render(tiny_generator, pivot, noise_mode="none")
    expected = tensor_to_pil(tiny_generator.synthesis(torch.cat(chain.steps(pivot)), noise_mode="none"))
    assert [np.asarray(p).tobytes() for p in pictures] == [np.asarray(p).tobytes() for p in expected]


def test_a_batch_of_pivots_is_refused_with_its_size(library, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    with pytest.raises(LatentShapeError, match="one pivot at a time, got a batch of 3$"):
        chain.render_tensor(tiny_generator, torch.randn(3, 32))


class FixedTextEncoder:
    """Text features without CLIP: a seeded random unit vector (16-d) per sentence."""

    def check(self, sentence, what="sentence"):
        return sentence

    def encode(self, sentence):
        seed = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:4], "little")
        feature = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
        return feature / np.linalg.norm(feature)


def test_style_steps_rows_are_the_sum_of_the_text_edits_so_far(tiny_generator):
    channels = tiny_generator.synthesis.style_channels()
    fs3 = np.random.default_rng(0).standard_normal((sum(channels), 16))
    layer_std = [np.full(count, 0.5) for count in channels]
    directions = {"age": torch.randn(32), "smile": torch.randn(32)}
    library = EditLibrary.from_tensors(directions=directions, fs3=fs3 / np.linalg.norm(fs3, axis=1, keepdims=True),
                                       text_encoder=FixedTextEncoder, layer_std=layer_std)
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    assert chain.style_steps() is None  # no text edit
    grey = Edit.text("grey hair", 2.0)
    chain.append(grey)
    chain.append(Edit("interfacegan", "smile", 1.0))
    rows = chain.style_steps()
    delta_s = library.text_direction(grey).delta_s
    assert [tuple(layer.shape) for layer in rows] == [(4, len(part)) for part in delta_s]
    for layer, part in zip(rows, delta_s):
        assert not layer[:2].any()  # the start and the InterfaceGAN step before the text edit
        assert torch.equal(layer[2], torch.from_numpy(part) * 2.0) and torch.equal(layer[3], layer[2])


def test_the_chain_file_is_written_one_key_a_line():
    chain = EditChain(demo_library(32, 8), [Edit("interfacegan", "age", 1.5)])
    assert chain.to_json() == (
        '{\n "format": "pti-edit-chain",\n "version": 1,\n "edits": [\n  {\n   "kind": "interfacegan",\n'
        '   "name": "age",\n   "strength": 1.5\n  }\n ]\n}')


def test_chain_json_messages_say_what_is_expected(library):
    with pytest.raises(EditSyntaxError, match="^edit chain JSON: 'edits' should be a list$"):
        EditChain.from_json('{"format": "pti-edit-chain", "version": 1, "edits": {}}', library)
    with pytest.raises(EditSyntaxError, match="edit 0 should be an object with exactly 'kind', 'name', 'strength'$"):
        EditChain.from_json('{"format": "pti-edit-chain", "version": 1, "edits": [[]]}', library)


def test_negative_indices_reach_the_first_edit(library):
    a, b, c = Edit("interfacegan", "age", 1.0), Edit("interfacegan", "smile", 1.0), Edit("interfacegan", "pose", 1.0)
    chain = EditChain(library, [a, b, c])
    chain.move(-3, -1)
    assert chain.edits == (b, c, a)
    assert chain.remove(-3) == b and chain.edits == (c, a)
    with pytest.raises(IndexError, match="edit index -3 is out of range for a chain of 2 edits"):
        chain.remove(-3)


# ---------------------------------------------------------------------------------------------------------
# Edit records and their text form in detail (mutmut survivors)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Edit("warp", "smile", 1.0), UnknownEditError,
         "^unknown edit kind 'warp'; expected one of interfacegan, ganspace, styleclip, text$"),
        (lambda: Edit("interfacegan", "", 1.0), EditSyntaxError, "^an edit needs a non-empty name, got ''$"),
        (lambda: Edit("interfacegan", 5, 1.0), EditSyntaxError, "^an edit needs a non-empty name, got 5$"),
        (lambda: Edit("interfacegan", "age", True), EditStrengthError,
         "^edit interfacegan:age: strength must be a number, got True$"),
        (lambda: Edit("interfacegan", "age", "2"), EditStrengthError, "strength must be a number, got '2'$"),
        (lambda: Edit.text("", 2.0), EditSyntaxError,
         "^the target sentence of the text edit is empty; type one, e.g. 'a smiling face'$"),
        (lambda: Edit.text("grey hair", 2.0, neutral=" "), EditSyntaxError,
         "^the neutral sentence of the text edit is empty; type one, e.g. 'a face'$"),
        (lambda: Edit.text("a Face", 2.0), EditSyntaxError,
         "^the target sentence is the same as the neutral one \\('a Face'\\); change the target to say what should "
         "change, e.g. 'a smiling face'$"),
        (lambda: Edit.text("grey hair", 2.0, beta=float("nan")), EditStrengthError,
         "^text edit 'grey hair': beta must be a finite number, got nan$"),
        (lambda: Edit.text("grey hair", 2.0, beta=True), EditStrengthError, "beta must be a finite number, got True"),
        (lambda: Edit.text("grey hair", 2.0, beta="0.1"), EditStrengthError, "beta must be a finite number"),
    ],
)
def test_bad_edits_are_refused_saying_what_to_give(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_strength_and_beta_are_stored_as_floats():
    edit = Edit("interfacegan", "age", 2)
    assert type(edit.strength) is float and edit.to_text() == "interfacegan:age=2.0"
    text = Edit.text("grey hair", 2, beta=1)
    assert type(text.beta) is float and text.to_text() == "text:a face->grey hair=2.0,1.0"


def test_text_edit_sentences_may_hold_an_arrow_or_an_equals_sign():
    arrow = Edit.text("a face with a -> tattoo", 2.0)
    assert Edit.parse(arrow.to_text()) == arrow  # the first arrow ends the neutral sentence
    assert Edit.parse("text:a face with e=mc2 written on it=3") == Edit.text("a face with e=mc2 written on it", 3.0)
    assert Edit.parse("text:a photo->grey hair=2") == Edit.text("grey hair", 2.0, neutral="a photo")


def test_a_second_equals_sign_is_not_part_of_a_name():
    with pytest.raises(EditSyntaxError, match="^cannot parse edit 'smile=2=3': strength '2=3' is not a number$"):
        Edit.parse("smile=2=3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("text:grey hair", "^cannot parse edit 'text:grey hair': expected text:\\[NEUTRAL->\\]TARGET=ALPHA\\[,BETA\\], "
                           "e.g. text:a face->a smiling face=4.1$"),
        ("text:grey hair=4,0.1,0.2", "^cannot parse edit 'text:grey hair=4,0.1,0.2': after '=' give ALPHA or "
                                     "ALPHA,BETA, e.g. 4.1,0.15$"),
        ("text:grey hair=4,x", "^cannot parse edit 'text:grey hair=4,x': '4,x' is not ALPHA or ALPHA,BETA "
                               "\\(numbers\\)$"),
    ],
)
def test_bad_text_edit_text_says_the_form(text, message):
    with pytest.raises(EditSyntaxError, match=message):
        Edit.parse(text)
