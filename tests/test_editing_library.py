"""The edit library and the mapper catalogue in detail: sources, names and labels of mapper files, the Hub listing,
options and ranges, validation, lazy loading and its cache (many written from mutmut survivors, #18)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from editing_directions.catalogue import HAIRSTYLES, MapperEntry, WeightSource, default_mapper_catalogue, \
    folder_mapper_catalogue, hub_mapper_catalogue, mapper_label, mapper_name
from editing_directions.errors import MapperFileError
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
    (tmp_path / "Afro.pt").write_bytes(b"x")
    (tmp_path / "afro.pt").write_bytes(b"x")
    message = (f"{tmp_path}: {tmp_path / 'Afro.pt'} and {tmp_path / 'afro.pt'} both give the mapper name 'afro'; "
               "rename one")
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
