"""The edit library and the mapper catalogue in detail: sources, names and labels of mapper files, the Hub listing,
options and ranges, validation, lazy loading and its cache (many written from mutmut survivors, #18)."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

from editing_directions.catalogue import HAIRSTYLES, MapperEntry, WeightSource, default_mapper_catalogue, \
    folder_mapper_catalogue, hub_mapper_catalogue, mapper_label, mapper_name
from editing_directions.edit import Edit
from editing_directions.errors import DirectionFileError, EditStrengthError, LatentShapeError, MapperFileError, \
    UnknownEditError
from editing_directions.ganspace import GanspacePCA
from editing_directions.library import TEXT_OPTION, EditLibrary, EditOption, demo_library
from editing_directions.styleclip import random_levels_mapper
from pti.weights import REGISTRY, WeightFile, WeightsError

# ---------------------------------------------------------------------------------------------------------
# The catalogue: where files come from, what mappers are called


def a_weight_file(**changes) -> WeightFile:
    fields = dict(key="k", repo_id="someone/edits", filename="mappers/afro.pt", repo_type="model", revision="main",
                  licence="MIT", description="a test file")
    return WeightFile(**(fields | changes))


def test_a_source_is_a_hub_file_or_a_local_file_never_both_or_neither(tmp_path):
    with pytest.raises(ValueError, match="^a WeightSource needs exactly one of weight_file and local_path$"):
        WeightSource()
    with pytest.raises(ValueError, match="exactly one"):
        WeightSource(weight_file=a_weight_file(), local_path=tmp_path / "afro.pt")
    assert WeightSource(weight_file=a_weight_file()).describe() == "hub:someone/edits/mappers/afro.pt"
    assert WeightSource(local_path=tmp_path / "afro.pt").describe() == str(tmp_path / "afro.pt")


def test_a_local_source_is_fetched_as_it_is(tmp_path):
    path = tmp_path / "afro.pt"
    with pytest.raises(WeightsError, match="file not found: .*afro.pt"):
        WeightSource(local_path=path).fetch()
    path.write_bytes(b"the user's own file")
    assert WeightSource(local_path=path).fetch() == path


def test_a_hub_source_is_resolved_in_the_cache_given(tmp_path, monkeypatch):
    import editing_directions.catalogue as catalogue

    calls = []
    monkeypatch.setattr(catalogue, "resolve", lambda weight_file, **options: calls.append((weight_file, options))
                        or tmp_path / "cached.pt")
    weight_file = a_weight_file()
    assert WeightSource(weight_file=weight_file).fetch(cache_dir=tmp_path, progress=False) == tmp_path / "cached.pt"
    assert WeightSource(weight_file=weight_file).fetch() == tmp_path / "cached.pt"
    assert calls == [(weight_file, {"cache_dir": tmp_path, "progress": False}),
                     (weight_file, {"cache_dir": None, "progress": True})]


@pytest.mark.parametrize(("stem", "name", "label"), [
    ("purple_hair", "purple_hair", "Purple hair"),
    ("Curly Hair", "curly_hair", "Curly Hair"),
    ("__mohawk__", "mohawk", "Mohawk"),
    ("grey-hair v2.1", "grey-hair_v2.1", "Grey hair v2.1"),
    ("blond ++ hair!", "blond_hair", "Blond ++ hair!"),
    ("Xmas_", "xmas", "Xmas"),  # only underscores are stripped from the ends
])
def test_mapper_names_are_file_safe_and_labels_readable(stem, name, label):
    assert mapper_name(stem) == name
    assert mapper_label(stem) == label


def test_a_stem_with_nothing_to_name_is_refused():
    with pytest.raises(MapperFileError, match=r"^cannot name a mapper after the file stem '\+\+'; rename the file$"):
        mapper_name("++")


def test_the_default_catalogue_is_the_ten_registered_hairstyles():
    entries = default_mapper_catalogue()
    assert [entry.name for entry in entries] == list(HAIRSTYLES) and len(entries) == 10
    assert entries[0] == MapperEntry("afro", "Afro hairstyle", WeightSource(weight_file=REGISTRY[
        "styleclip-afro-hairstyle"]))
    assert entries[-1].label == "Wavy hairstyle"
    assert all(entry.source.weight_file.key == f"styleclip-{entry.name}-hairstyle" for entry in entries)
    # another registry is read, not the default one
    registry = {f"styleclip-{style}-hairstyle": a_weight_file(key=style) for style in HAIRSTYLES}
    assert [entry.source.weight_file.key for entry in default_mapper_catalogue(registry)] == list(HAIRSTYLES)


def test_a_folder_gives_its_pt_files_sorted(tmp_path):
    for name in ("b_mapper.pt", "A mapper.pt", "notes.txt", "upper.PT", "c.pt.bak"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.pt").mkdir()  # a folder, not a file
    entries = folder_mapper_catalogue(str(tmp_path))
    assert [(entry.name, entry.label, entry.source.local_path) for entry in entries] == [
        ("a_mapper", "A mapper", tmp_path / "A mapper.pt"), ("b_mapper", "B mapper", tmp_path / "b_mapper.pt")]
    with pytest.raises(MapperFileError, match="^mapper folder not found: .*absent$"):
        folder_mapper_catalogue(tmp_path / "absent")


def test_two_files_with_one_mapper_name_are_refused_naming_both(tmp_path):
    (tmp_path / "purple hair.pt").write_bytes(b"x")  # not Afro.pt / afro.pt: one file where case is ignored
    (tmp_path / "purple_hair.pt").write_bytes(b"x")
    message = (f"{tmp_path}: {tmp_path / 'purple hair.pt'} and {tmp_path / 'purple_hair.pt'} both give the mapper "
               "name 'purple_hair'; rename one")
    with pytest.raises(MapperFileError, match=f"^{re.escape(message)}$"):
        folder_mapper_catalogue(tmp_path)


@pytest.fixture()
def listing(monkeypatch):
    """`huggingface_hub.list_repo_files` replaced: records its calls, returns `listing.files` (nothing online)."""
    import huggingface_hub

    class Listing:
        files = ["README.md", "mappers/Mohawk Hair.pt", "mappers/old/bob.pt", "encoders/e4e.pt", "afro.pt",
                 "mappers/notes.txt", "mappersX/y.pt"]
        calls: list = []
        error: Exception | None = None

    def list_repo_files(repo_id, **options):
        Listing.calls.append((repo_id, options))
        if Listing.error is not None:
            raise Listing.error
        return Listing.files

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    return Listing


def test_a_hub_repo_gives_its_pt_files_under_the_subfolder(listing):
    entries = hub_mapper_catalogue("someone/mappers", repo_type="space", revision="v2", subfolder="/mappers/")
    assert listing.calls == [("someone/mappers", {"repo_type": "space", "revision": "v2"})]
    assert [(entry.name, entry.label) for entry in entries] == [("mohawk_hair", "Mohawk Hair"), ("bob", "Bob")]
    assert entries[0].source.weight_file == WeightFile(
        "styleclip-user-mohawk_hair", "someone/mappers", "mappers/Mohawk Hair.pt", "space", "v2",
        licence="as stated by the Hub repo someone/mappers", description="user-given StyleCLIP mapper Mohawk Hair")
    every = hub_mapper_catalogue("someone/mappers")  # no subfolder: every *.pt file, on the default branch
    assert listing.calls[-1] == ("someone/mappers", {"repo_type": "model", "revision": None})
    assert [entry.source.weight_file.filename for entry in every] == [
        "afro.pt", "encoders/e4e.pt", "mappers/Mohawk Hair.pt", "mappers/old/bob.pt", "mappersX/y.pt"]
    assert {entry.source.weight_file.revision for entry in every} == {"main"}
    assert {entry.source.weight_file.repo_type for entry in every} == {"model"}
    listing.files = ["Xmas/tree.pt", "mas/star.pt"]
    assert [entry.name for entry in hub_mapper_catalogue("someone/mappers", subfolder="Xmas")] == ["tree"]


@pytest.mark.parametrize("error", [OSError("no route to host"), ValueError("bad repo id")])
def test_a_hub_repo_that_cannot_be_listed_says_which(listing, error):
    listing.error = error
    with pytest.raises(WeightsError, match=f"^could not list the files of the Hub dataset repo 'someone/mappers': "
                                           f"{error}$"):
        hub_mapper_catalogue("someone/mappers", repo_type="dataset")


def test_a_hub_repo_with_two_files_of_one_name_is_refused(listing):
    listing.files = ["a/afro.pt", "b/Afro.pt"]
    with pytest.raises(MapperFileError, match="^Hub repo someone/mappers: hub:someone/mappers/a/afro.pt and "
                                              "hub:someone/mappers/b/Afro.pt both give the mapper name 'afro'"):
        hub_mapper_catalogue("someone/mappers")


# ---------------------------------------------------------------------------------------------------------
# The library: options, validation, lazy loading


def a_pca(w_dim: int = 32, seed: int = 0) -> GanspacePCA:
    g = torch.Generator().manual_seed(seed)
    comp = torch.randn(60, 1, w_dim, generator=g)
    return GanspacePCA(mean=torch.randn(1, w_dim, generator=g), comp=comp / comp.norm(dim=2, keepdim=True),
                       std=torch.rand(60, generator=g) + 0.5)


class CountingEncoder:
    """Text features without CLIP (a seeded unit vector of 16 per sentence); counts the sentences it encodes."""

    def __init__(self):
        self.encoded = []

    def __call__(self):
        """Not a `TextEncoder`, so the library takes it as the function that builds the encoder: itself."""
        return self

    def check(self, sentence, what="sentence"):
        return sentence

    def encode(self, sentence):
        self.encoded.append(sentence)
        seed = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:4], "little")
        feature = np.random.default_rng(seed).standard_normal(16)
        return (feature / np.linalg.norm(feature)).astype(np.float32)


def text_parts(channels=(4, 6)):
    """fs3 (unit rows of 16), a counting encoder and a per-layer std for a generator with these style channels."""
    fs3 = np.random.default_rng(1).standard_normal((sum(channels), 16))
    return {"fs3": fs3 / np.linalg.norm(fs3, axis=1, keepdims=True), "text_encoder": CountingEncoder(),
            "layer_std": [np.full(count, 0.5 + layer) for layer, count in enumerate(channels)]}


def test_each_kind_offers_its_range_and_default():
    library = EditLibrary.from_tensors(directions={"age": torch.randn(32)}, pca=a_pca(),
                                       mappers={"purple_hair": random_levels_mapper(32, seed=1)},
                                       labels={"interfacegan:age": "Age (mine)", "ganspace:smile": "Grin"})
    assert library.options() == (
        EditOption("interfacegan", "age", "Age (mine)", -3.0, 3.0, 0.1, 0.0),
        EditOption("ganspace", "eye_openness", "Eye openness", -10.0, 10.0, 0.1, 5.0),
        EditOption("ganspace", "smile", "Grin", -10.0, 10.0, 0.1, -6.0),
        EditOption("ganspace", "trimmed_beard", "Trimmed beard", -10.0, 10.0, 0.1, 7.0),
        EditOption("styleclip", "purple_hair", "Purple hair", 0.0, 0.3, 0.01, 0.1))
    assert [option.key for option in library.options("ganspace")] == [
        "ganspace:eye_openness", "ganspace:smile", "ganspace:trimmed_beard"]
    assert library.options("text") == () and not library.offers_text
    assert TEXT_OPTION == EditOption("text", "sentence", "Text (StyleCLIP global direction)", -10.0, 10.0, 0.1, 4.1)
    default_labels = EditLibrary.from_tensors(directions={"pose": torch.randn(32)})
    assert default_labels.option("interfacegan", "pose").label == "Head pose (yaw)"


def test_unknown_kinds_and_names_are_refused_listing_what_exists():
    library = EditLibrary.from_tensors(directions={"age": torch.randn(32), "smile": torch.randn(32)})
    with pytest.raises(UnknownEditError, match="^unknown InterfaceGAN direction 'mohawk'; known: age, smile, pose$"):
        EditLibrary.from_tensors(directions={"mohawk": torch.randn(32)})
    with pytest.raises(UnknownEditError, match="^unknown edit kind 'warp'; expected one of interfacegan, ganspace, "
                                               "styleclip, text$"):
        library.option("warp", "age")
    with pytest.raises(UnknownEditError, match="^this library has no text edits \\(they need fs3, CLIP and the "
                                               "generator\\)$"):
        library.option("text", "grey hair")
    with pytest.raises(UnknownEditError, match="^unknown styleclip edit 'afro'; available: none in this library$"):
        library.option("styleclip", "afro")
    with pytest.raises(UnknownEditError, match="^unknown interfacegan edit 'pose'; available: age, smile$"):
        library.direction("pose")
    with pytest.raises(UnknownEditError, match="^this library has no GANSpace edits$"):
        library.pca()
    with pytest.raises(UnknownEditError, match="unknown styleclip edit 'afro'"):
        library.mapper("afro")
    with pytest.raises(UnknownEditError, match="unknown ganspace edit 'smile'"):
        library.ganspace_coordinate("smile", torch.randn(1, 8, 32))


def test_strengths_are_checked_against_the_range_ends_included():
    library = EditLibrary.from_tensors(directions={"age": torch.randn(32)}, **text_parts())
    for strength in (-3.0, 3.0):
        assert library.validate(Edit("interfacegan", "age", strength)).name == "age"
    for strength in (-3.001, 3.001):
        with pytest.raises(EditStrengthError, match=f"^interfacegan edit 'age': strength {strength:g} is outside "
                                                    r"the allowed range \[-3, 3\]$"):
            library.validate(Edit("interfacegan", "age", strength))
    for beta in (0.08, 0.3):
        assert library.validate(Edit.text("grey hair", 10.0, beta=beta)) == TEXT_OPTION
    for beta in (0.079, 0.301):
        with pytest.raises(EditStrengthError, match=f"^text edit 'grey hair': beta {beta:g} is outside the allowed "
                                                    r"range \[0.08, 0.3\]; the authors suggest 0.15$"):
            library.validate(Edit.text("grey hair", 1.0, beta=beta))
    with pytest.raises(EditStrengthError, match=r"strength -10.5 is outside the allowed range \[-10, 10\]"):
        library.validate(Edit.text("grey hair", -10.5))


def test_a_library_needs_a_loader_for_everything_it_offers():
    age = EditOption("interfacegan", "age", "Age", -3, 3, 0.1, 0)
    smile = EditOption("ganspace", "smile", "Smile", -10, 10, 0.1, -6)
    with pytest.raises(ValueError, match="^no loader for ganspace:pca, interfacegan:age$"):
        EditLibrary([smile, age], {})
    with pytest.raises(ValueError, match="^text edits need loaders for all of text:fs3, text:encoder, text:std$"):
        EditLibrary([], {"text:fs3": list, "text:std": list})
    library = EditLibrary([age], {"interfacegan:age": list}, num_ws=8, description="mine")
    assert (library.num_ws, library.description, library.options()) == (8, "mine", (age,))
    assert (EditLibrary([], {}).num_ws, EditLibrary([], {}).description) == (None, "")
    assert (EditLibrary.from_tensors().num_ws, EditLibrary.from_tensors().description) == (None, "")


def test_each_file_is_loaded_once_on_first_use():
    loads = []
    direction = torch.randn(32)
    library = EditLibrary([EditOption("interfacegan", "age", "Age", -3, 3, 0.1, 0)],
                          {"interfacegan:age": lambda: loads.append("age") or direction})
    assert loads == []
    assert library.direction("age") is direction and library.direction("age") is direction
    assert loads == ["age"]


def test_tensors_given_are_checked_like_files():
    with pytest.raises(DirectionFileError, match="^direction 'age': the direction is all zeros$"):
        EditLibrary.from_tensors(directions={"age": torch.zeros(32)})
    pca = a_pca()
    with pytest.raises(DirectionFileError, match="std"):
        EditLibrary.from_tensors(pca=GanspacePCA(pca.mean, pca.comp, -pca.std))
    with pytest.raises(TypeError, match="^mapper 'afro' should be a LevelsMapper, got Linear$"):
        EditLibrary.from_tensors(mappers={"afro": torch.nn.Linear(2, 2)})
    parts = text_parts()
    for left_out in parts:
        with pytest.raises(ValueError, match="^text edits need all of fs3, text_encoder and layer_std$"):
            EditLibrary.from_tensors(**{name: part for name, part in parts.items() if name != left_out})
    with pytest.raises(ValueError, match="^fs3 has 10 rows but layer_std has 11 channels$"):
        EditLibrary.from_tensors(**(parts | {"layer_std": [np.ones(5), np.ones(6)]}))
    library = EditLibrary.from_tensors(**(parts | {"fs3": parts["fs3"].astype(np.float64)}))
    assert library.offers_text and library._load("text:fs3").dtype == np.float32


def test_codes_of_the_wrong_kind_are_refused():
    library = EditLibrary.from_tensors(directions={"age": torch.randn(32)})  # no layer count: any L
    edit = Edit("interfacegan", "age", 1.0)
    assert library.apply(edit, torch.zeros(1, 5, 32)).shape == (1, 5, 32)
    for code, shape in ((torch.zeros(1, 8, 32, dtype=torch.int64), r"\(1, 8, 32\)"), (torch.zeros(8, 32), r"\(8, 32\)"),
                        ([[0.0] * 32], "list")):
        with pytest.raises(LatentShapeError, match=f"^edits need a floating-point W\\+ code of shape \\(N, L, D\\), "
                                                   f"got {shape}$"):
            library.apply(edit, code)


def test_each_kind_applies_its_own_edit():
    directions = {"age": torch.randn(32)}
    pca, mapper = a_pca(), random_levels_mapper(32, seed=3)
    library = EditLibrary.from_tensors(directions=directions, pca=pca, mappers={"m": mapper}, num_ws=8, **text_parts())
    w = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(library.apply(Edit("interfacegan", "age", 2.0), w), w + 2.0 * directions["age"])
    assert torch.allclose(library.apply(Edit("styleclip", "m", 0.2), w), w + 0.2 * mapper(w), atol=1e-6)
    # GANSpace smile: component 46 on layers 4..5 set to coordinate -6 (std units) from the first layer's coordinate
    c, s = pca.comp[46, 0].double(), pca.std[46].double()
    coordinate = (w[:, 0].double() - pca.mean[0].double()) @ c / s
    expected = w.double().clone()
    expected[:, 4:5] += ((-6.0 - coordinate) * s)[:, None, None] * c
    assert torch.allclose(library.apply(Edit("ganspace", "smile", -6.0), w).double(), expected, atol=1e-5)
    assert torch.allclose(library.ganspace_coordinate("smile", w).double(), coordinate, atol=1e-5)
    text = library.apply(Edit.text("grey hair", 2.0), w)  # a StyleSpace edit: W+ as it was, in a new tensor
    assert torch.equal(text, w) and text is not w
    text.add_(1.0)
    assert not torch.equal(text, w)


# ---------------------------------------------------------------------------------------------------------
# Text edits: their direction, offsets and caches


def test_a_text_direction_comes_from_both_sentences_and_beta():
    from editing_directions.global_directions import global_direction

    parts = text_parts()
    encoder = parts["text_encoder"]
    library = EditLibrary.from_tensors(**parts)
    edit = Edit.text("grey hair", 3.0, neutral="a photo", beta=0.1)
    direction = library.text_direction(edit)
    expected = global_direction(parts["fs3"].astype(np.float32), encoder.encode("a photo"),
                                encoder.encode("grey hair"), beta=0.1, layer_std=parts["layer_std"])
    assert direction.channels == expected.channels
    for got, want in zip(direction.delta_s, expected.delta_s, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    offsets = library.style_offsets(edit)
    assert [offset.dtype for offset in offsets] == [torch.float32, torch.float32]
    for offset, want in zip(offsets, expected.delta_s, strict=True):
        assert torch.allclose(offset, torch.from_numpy(want) * 3.0, rtol=1e-6, atol=0)
    with pytest.raises(EditStrengthError, match="beta 0.5"):  # validated first
        library.text_direction(Edit.text("grey hair", 3.0, beta=0.5))


def test_text_directions_are_cached_per_neutral_target_and_beta(monkeypatch):
    import editing_directions.library as library_module

    monkeypatch.setattr(library_module, "_DIRECTION_CACHE_SIZE", 2)
    parts = text_parts()
    encoder = parts["text_encoder"]
    library = EditLibrary.from_tensors(**parts)
    first = library.text_direction(Edit.text("grey hair", 1.0))
    assert encoder.encoded == ["a face", "grey hair"]
    assert library.text_direction(Edit.text("grey hair", -2.0)) is first  # alpha is not part of the direction
    assert len(encoder.encoded) == 2
    other_neutral = library.text_direction(Edit.text("grey hair", 1.0, neutral="a photo"))
    assert other_neutral is not first and encoder.encoded[2:] == ["a photo", "grey hair"]
    assert library.text_direction(Edit.text("grey hair", 1.0, beta=0.2)) is not first
    assert len(encoder.encoded) == 6
    # two are kept: the third evicted the oldest, `first`, so it is computed again; beta 0.2 stays cached
    library.text_direction(Edit.text("grey hair", 1.0, beta=0.2))
    assert len(encoder.encoded) == 6
    assert library.text_direction(Edit.text("grey hair", 1.0)) is not first
    assert len(encoder.encoded) == 8
    library.text_direction(Edit.text("grey hair", 1.0, beta=0.2))
    assert len(encoder.encoded) == 8


def test_the_most_recently_used_text_direction_stays_cached(monkeypatch):
    import editing_directions.library as library_module

    monkeypatch.setattr(library_module, "_DIRECTION_CACHE_SIZE", 2)
    library = EditLibrary.from_tensors(**text_parts())
    a, b, c = (Edit.text(target, 1.0) for target in ("grey hair", "red hair", "blue hair"))
    first = library.text_direction(a)
    library.text_direction(b)
    assert library.text_direction(a) is first  # a is now the newest, b the oldest
    library.text_direction(c)  # evicts b
    assert library.text_direction(a) is first


def test_prepare_text_loads_the_parts_and_encodes_the_default_neutral():
    loads = []
    parts = text_parts()
    encoder = parts["text_encoder"]
    library = EditLibrary.from_tensors(fs3=parts["fs3"], layer_std=parts["layer_std"],
                                       text_encoder=lambda: loads.append("encoder") or encoder)
    library.prepare_text()
    assert loads == ["encoder"] and encoder.encoded == ["a face"]
    assert set(library._loaded) == {"text:fs3", "text:encoder", "text:std"}


# ---------------------------------------------------------------------------------------------------------
# from_registry: which file each edit reads, and with what


@pytest.fixture()
def resolved(monkeypatch, tmp_path):
    """`pti.weights.resolve` replaced (nothing online): records (registry key, cache_dir, progress) and returns a
    file saved for that key in `resolved.files` (default: a random 32-dim direction)."""
    import editing_directions.catalogue as catalogue

    class Resolved:
        calls: list = []
        files: dict = {}

    def resolve(weight_file, *, cache_dir, progress):
        Resolved.calls.append((weight_file.key, cache_dir, progress))
        path = tmp_path / f"{weight_file.key}.pt"
        torch.save(Resolved.files.get(weight_file.key, torch.randn(1, 32)), path)
        return path

    monkeypatch.setattr(catalogue, "resolve", resolve)
    return Resolved


def test_registry_files_are_fetched_into_the_cache_given(resolved, tmp_path):
    library = EditLibrary.from_registry(cache_dir=tmp_path / "hub", progress=False)
    assert resolved.calls == []  # nothing is fetched before it is used
    library.direction("pose")
    assert resolved.calls == [("interfacegan-rotation", tmp_path / "hub", False)]
    pca = a_pca()
    resolved.files["ganspace-ffhq-pca"] = {"mean": pca.mean, "comp": pca.comp, "std": pca.std}
    assert torch.equal(library.pca().comp, pca.comp)
    assert resolved.calls[-1] == ("ganspace-ffhq-pca", tmp_path / "hub", False)
    EditLibrary.from_registry().direction("age")
    assert resolved.calls[-1] == ("interfacegan-age", None, True)


def test_a_directions_folder_holds_the_release_file_names(tmp_path, resolved):
    pose, pca = torch.randn(1, 32), a_pca()
    torch.save(pose, tmp_path / "rotation.pt")
    torch.save({"mean": pca.mean, "comp": pca.comp, "std": pca.std}, tmp_path / "ffhq_pca.pt")
    library = EditLibrary.from_registry(directions_dir=str(tmp_path), default_mappers=False)
    assert torch.equal(library.direction("pose"), pose[0])
    assert torch.equal(library.pca().std, pca.std)
    assert resolved.calls == [] and library.options("styleclip") == ()


def test_mappers_of_a_folder_and_a_repo_replace_defaults_in_that_order(tmp_path, monkeypatch, resolved):
    import huggingface_hub

    import editing_directions.styleclip as styleclip

    listings = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo_id, **options: listings.append((repo_id, options)) or ["m/afro.pt", "m/bob.pt"])
    loads = []
    monkeypatch.setattr(styleclip, "load_mapper", lambda path, *, device: loads.append((path.name, device)) or path)
    (tmp_path / "bob.pt").write_bytes(b"x")
    (tmp_path / "mohawk.pt").write_bytes(b"x")
    library = EditLibrary.from_registry(mapper_dir=tmp_path, mapper_repo="someone/mappers", mapper_repo_type="space",
                                        mapper_repo_revision="v1", mapper_subfolder="m", device="cuda:1")
    assert listings == [("someone/mappers", {"repo_type": "space", "revision": "v1"})]
    labels = {option.name: option.label for option in library.options("styleclip")}
    assert len(labels) == 11 and (labels["afro"], labels["bob"], labels["mohawk"], labels["wavy"]) == (
        "Afro", "Bob", "Mohawk", "Wavy hairstyle")
    assert library.mapper("mohawk") == tmp_path / "mohawk.pt" and loads == [("mohawk.pt", "cuda:1")]
    library.mapper("bob")  # the repo's, which came after the folder's
    assert resolved.calls[-1][0] == "styleclip-user-bob" and loads[-1] == ("styleclip-user-bob.pt", "cuda:1")
    library.mapper("wavy")
    assert resolved.calls[-1][0] == "styleclip-wavy-hairstyle"


def test_a_generator_brings_text_edits_read_from_the_registry(monkeypatch, tmp_path, resolved):
    from types import SimpleNamespace

    import editing_directions.global_directions as global_directions
    import editing_directions.library as library_module

    calls = []
    parts = text_parts((4, 6))
    monkeypatch.setattr(global_directions, "load_fs3",
                        lambda path, *, channels: calls.append(("fs3", path.name, channels)) or parts["fs3"])
    monkeypatch.setattr(library_module, "load_text_encoder",
                        lambda path, *, device: calls.append(("clip", path.name, device)) or parts["text_encoder"])
    generator = SimpleNamespace(synthesis=SimpleNamespace(style_channels=lambda: [4, 6]))
    monkeypatch.setattr(global_directions, "cached_style_std", lambda G, *, cache_dir: calls.append(
        ("std", G, cache_dir)) or parts["layer_std"])
    assert not EditLibrary.from_registry().offers_text
    library = EditLibrary.from_registry(generator=generator, device="cuda:1", std_cache_dir=tmp_path / "std",
                                        cache_dir=tmp_path / "hub")
    assert library.offers_text and calls == []
    library.prepare_text()
    assert calls == [("fs3", "styleclip-fs3-ffhq.pt", 10), ("clip", "clip-vit-b-32-openai.pt", "cuda:1"),
                     ("std", generator, tmp_path / "std")]
    assert [call[1:] for call in resolved.calls] == [(tmp_path / "hub", True)] * 2


def test_the_encoder_checks_each_sentence_as_what_it_is():
    class Checking(CountingEncoder):
        def __init__(self):
            super().__init__()
            self.checked = []

        def check(self, sentence, what="sentence"):
            self.checked.append((sentence, what))
            return sentence.upper()  # what check returns is what gets encoded

    parts = text_parts()
    encoder = Checking()
    library = EditLibrary.from_tensors(**(parts | {"text_encoder": encoder}))
    library.text_direction(Edit.text("grey hair", 1.0, neutral="a photo"))
    assert encoder.checked == [("a photo", "neutral sentence"), ("grey hair", "target sentence")]
    assert encoder.encoded == ["A PHOTO", "GREY HAIR"]


# ---------------------------------------------------------------------------------------------------------
# The demo library: random edits under the real names, said to be random


def test_the_demo_library_is_seeded_random_and_says_so():
    library = demo_library(32, 8, seed=3)
    assert library.num_ws == 8 and not library.offers_text
    assert library.description == ("Random demo edits for a 32-dim generator with 8 W+ layers (seed 3): seeded random "
                                   "directions, PCA and mappers under the real edit names; they carry no meaning.")
    assert [option.label for option in library.options()] == [
        "Age (random demo direction)", "Smile (random demo direction)", "Head pose (yaw) (random demo direction)",
        "Eye openness (random demo component)", "Smile (random demo component)",
        "Trimmed beard (random demo component)", "Random demo mapper 1", "Random demo mapper 2"]
    pca = library.pca()
    assert pca.comp.shape == (59, 1, 32)  # components 0..58: the highest PTI edit uses 58
    assert torch.allclose(pca.comp.norm(dim=2), torch.ones(59, 1))
    assert pca.mean.shape == (1, 32) and 0 < pca.mean.abs().max() < 0.5  # near the origin
    assert 0.5 <= pca.std.min() and pca.std.max() < 1.5 and pca.std.shape == (59,)
    w = torch.randn(1, 8, 32)
    for index in (1, 2):  # mapper k of seed s is the random mapper of seed 1000 s + k
        assert torch.equal(library.mapper(f"demo_{index}")(w), random_levels_mapper(32, seed=3000 + index)(w))
    assert not torch.equal(library.direction("age"), library.direction("smile"))
    assert "(seed 0)" in demo_library(32, 8).description


def test_the_demo_library_is_the_same_for_the_same_seed(tiny_generator, monkeypatch):
    import editing_directions.global_directions as global_directions

    layer_std = text_parts(tiny_generator.synthesis.style_channels())["layer_std"]
    monkeypatch.setattr(global_directions, "style_std", lambda G, **options: layer_std)
    first = demo_library(32, 8, seed=4, generator=tiny_generator)
    torch.randn(100)  # the global random stream moves on between the two
    second = demo_library(32, 8, seed=4, generator=tiny_generator)
    for field in ("mean", "comp", "std"):
        assert torch.equal(getattr(first.pca(), field), getattr(second.pca(), field)), field
    assert np.array_equal(first._load("text:fs3"), second._load("text:fs3"))
    assert not torch.equal(demo_library(32, 8, seed=5).pca().comp, first.pca().comp)


def test_the_demo_library_of_a_generator_has_random_text_edits(tiny_generator, monkeypatch):
    import editing_directions.global_directions as global_directions
    import editing_directions.library as library_module

    encoders, stds = [], []
    monkeypatch.setattr(library_module, "random_text_encoder",
                        lambda **options: encoders.append(options) or CountingEncoder())
    layer_std = text_parts(tiny_generator.synthesis.style_channels())["layer_std"]
    monkeypatch.setattr(global_directions, "style_std", lambda G, **options: stds.append((G, options)) or layer_std)
    library = demo_library(32, 8, seed=2, generator=tiny_generator)
    assert stds == [(tiny_generator, {"samples": 10_000})]  # the std of s from 10 000 samples of the generator
    assert library.offers_text and library.description == (
        "Random demo edits for a 32-dim generator with 8 W+ layers (seed 2): seeded random directions, PCA and "
        "mappers under the real edit names; they carry no meaning. Text edits use a random fs3 and a tiny random "
        "CLIP text tower.")
    fs3 = library._load("text:fs3")
    assert fs3.shape == (sum(tiny_generator.synthesis.style_channels()), 16)
    assert np.allclose(np.linalg.norm(fs3, axis=1), 1.0, rtol=1e-5, atol=0)
    assert encoders == []  # built on the first text edit
    library.prepare_text()
    assert encoders == [{"embed_dim": 16, "seed": 2}]
