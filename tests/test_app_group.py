"""Group photos in the app through `gradio_client` (tiny model, offline): the faces found and numbered, every face
inverted into one generator, edits for every face or for one, the group photo pasted back, the downloads."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_in_process import served
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
import group_photos
from alignment import paste_back_faces
from editing_directions.chain import EditChain
from editing_directions.edit import Edit
from pti.generator_io import load_generator_file
from pti.images import pil_to_tensor, tensor_to_pil

SETTINGS = ("fast", 2, 2, True, 0, "w")
ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def options(landmarks_model_path) -> app.AppOptions:
    return app.AppOptions(model="tiny", device="cpu", host="127.0.0.1",
                          landmarks=str(landmarks_model_path), lpips="random", max_file_size="1mb")


@pytest.fixture(scope="module")
def editor(options):
    return app.load_editor(options)


@pytest.fixture(scope="module")
def url(editor, options):
    with served(editor, options) as address:
        yield address


@pytest.fixture(scope="module")
def group_photo(tmp_path_factory) -> Path:
    """The side-by-side group photo (two faces), as a JPEG under the 1 MB upload limit."""
    path = tmp_path_factory.mktemp("group") / "group.jpg"
    group_photos.side_by_side().save(path, quality=92)
    return path


def image(path: str | dict) -> Image.Image:
    if isinstance(path, dict):
        path = path.get("value") or path.get("image") or path.get("path")
    with Image.open(path) as opened:
        return opened.convert("RGB")


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


def by_name(files: list) -> dict[str, Path]:
    return {Path(path).name: Path(path) for path in files}


def render_chain(generator, pivot: torch.Tensor, edits: tuple[Edit, ...], library) -> list[np.ndarray]:
    """Every step of `edits` on `pivot` (1, w_dim), rendered here by the chain itself, one face alone."""
    return [pixels(step) for step in EditChain(library, edits).render(generator, pivot, force_fp32=True)]


def test_a_group_photo_from_upload_to_the_pasted_back_group(url, editor, group_photo):
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(group_photo)), api_name="/align")
        preview, choice, picker, status = client.predict(api_name="/find_faces")
        # Found: two faces, numbered left to right in a preview, and the choice 'this face / all faces'.
        expected = editor.align_group(group_photo.read_bytes())
        assert np.array_equal(pixels(image(preview)), pixels(editor.faces_preview(expected)))
        assert choice["visible"] is True and [value for _, value in choice["choices"]] == ["one", "all"]
        assert status.startswith("2 faces found (numbered in the preview)")
        numbers = {label.split(" ·")[0].split(" (")[0] for label, _ in picker["choices"]}
        assert numbers == {"Face 1", "Face 2"}  # the picker speaks the preview's numbers

        status, pivots, tuned, gallery, _, result, files = client.predict(*SETTINGS, "all", api_name="/invert")
        assert status.startswith("Inverted all 2 faces into one generator")
        assert image(pivots).size == image(tuned).size == (64, 32)  # both faces side by side, 32 px each
        assert [item["caption"] for item in gallery] == [
            f"Face {k} · no edits (click to edit this face)" for k in (1, 2)]
        names = by_name(files)
        for k, face in enumerate(expected.group.faces, start=1):
            assert np.array_equal(pixels(image(names[f"face_{k}_aligned.png"])), pixels(face.image))
        # Each face's reported MSE is its own pivot rendered by the downloaded weights against its aligned face.
        generator = load_generator_file(names["tuned.safetensors"])
        with np.load(names["pivots.npz"]) as archive:
            pivot_codes = [torch.from_numpy(archive[f"pivot_{i}"]) for i in range(2)]
        reported = [float(mse) for mse in re.findall(r"face \d: pivot [\d.]+ / [\d.]+, PTI [\d.]+ / ([\d.]+)", status)]
        assert len(reported) == 2
        for k, code in enumerate(pivot_codes):
            with torch.no_grad():
                rendered = generator.synthesis(code[:, None].repeat(1, generator.num_ws, 1), noise_mode="const",
                                               force_fp32=True)
            target = pil_to_tensor(image(names[f"face_{k + 1}_aligned.png"]), size=32)
            assert reported[k] == pytest.approx(float(((rendered - target) ** 2).mean()), abs=6e-5)
            assert np.array_equal(pixels(image(gallery[k])), pixels(tensor_to_pil(rendered)[0]))
        starts = [pixels(image(item)) for item in gallery]

        # An edit for every face: each face's chain renders as that face alone would.
        library = editor._require_library()
        age = (Edit("interfacegan", "age", 2.0),)
        every = client.predict("interfacegan:age", 2.0, False, app.ALL_FACES, api_name="/add_edit")
        assert every[4] == "Every face: 1 edit."
        for k in range(2):
            want = render_chain(generator, pivot_codes[k], age, library)[-1]
            assert np.abs(pixels(image(every[0][k])) - want).max() <= 1 and not np.array_equal(want, starts[k])

        # An edit for face 2 alone: its steps in the gallery, face 1 untouched.
        smile = (*age, Edit("interfacegan", "smile", -1.5))
        second = client.predict("interfacegan:smile", -1.5, False, 1, api_name="/add_edit")
        assert second[4] == "Face 2: 2 edits (the other faces are unchanged)."
        assert [item["caption"][:10] for item in second[0]] == ["Face 2 · 0", "Face 2 · 1", "Face 2 · 2"]
        want = render_chain(generator, pivot_codes[1], smile, library)
        assert all(np.abs(pixels(image(got)) - step).max() <= 1 for got, step in zip(second[0], want))
        names = by_name(second[3])
        face_1_final = pixels(image(names["face_1_final.png"]))
        assert np.array_equal(face_1_final, pixels(image(every[0][0])))  # face 1 kept its one edit
        chains = [json.loads(names[f"face_{k}_edit_chain.json"].read_text())["edits"] for k in (1, 2)]
        assert [[edit["name"] for edit in chain] for chain in chains] == [["age"], ["age", "smile"]]

        # Choosing a face shows its steps; the chains now differ, so removing a step of 'every face' is refused.
        face_1 = client.predict(0, False, api_name="/edit_face")
        assert [item["caption"][:10] for item in face_1[0]] == ["Face 1 · 0", "Face 1 · 1"]
        assert face_1[3] == {"__type__": "update"}  # the downloads, the same for every face, are not written again
        with pytest.raises(AppError, match="The faces' chains differ: choose one face"):
            client.predict(0, False, app.ALL_FACES, api_name="/remove_edit")
        with pytest.raises(AppError, match=r"There is no face 5 to edit"):
            client.predict("interfacegan:age", 1.0, False, 5, api_name="/add_edit")

        # Every face pasted back into the one photo: its size, untouched far from the faces, each face changed.
        pasted, files = client.predict(True, app.ALL_FACES, api_name="/paste_back")
        photo = image(str(group_photo))
        assert pasted["label"] == "Every face pasted back into the photo" and image(pasted).size == photo.size
        changed = (pixels(image(pasted)) != pixels(photo)).any(axis=2)
        assert not changed[:, :40].any() and not changed[-40:, :].any()
        for face in expected.group.faces:
            left, top = face.quad.min(axis=0).astype(int)
            right, bottom = face.quad.max(axis=0).astype(int)
            assert changed[max(top, 0):bottom, max(left, 0):right].mean() > 0.2
        names = by_name(files)
        finals = [image(names[f"face_{k}_final.png"]) for k in (1, 2)]  # each face pasted through its own quad
        assert np.array_equal(pixels(image(pasted)), pixels(paste_back_faces(photo, expected.group.faces, finals)))
        with zipfile.ZipFile(names["group.zip"]) as archive:
            assert sorted(archive.namelist()) == sorted(
                ["photo.jpg", "faces.png", "faces.json", "face_1_aligned.png", "face_2_aligned.png", "pivots.npz",
                 "face_1_final.png", "face_2_final.png", "face_1_edit_chain.json", "face_2_edit_chain.json",
                 "pasted_back.png"])
            assert np.array_equal(pixels(Image.open(archive.open("pasted_back.png")).convert("RGB")),
                                  pixels(image(pasted)))

        # Clearing face 2 leaves face 1's edit; clearing every face goes back to the reconstructions.
        cleared = client.predict(False, 1, api_name="/clear_edits")
        assert cleared[4] == "Chain cleared." and len(cleared[0]) == 1
        assert np.array_equal(pixels(image(cleared[0][0])), starts[1])
        everyone = client.predict(False, app.ALL_FACES, api_name="/clear_edits")
        assert [pixels(image(item)).tolist() for item in everyone[0]] == [start.tolist() for start in starts]
    finally:
        client.close()


def test_inverting_this_face_of_a_group_photo_is_the_one_face_path(url, group_photo):
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(group_photo)), api_name="/align")
        client.predict(api_name="/find_faces")
        status, pivot, *_, files = client.predict(*SETTINGS, "one", api_name="/invert")
        assert status.startswith("Inverted in") and image(pivot).size == (32, 32)
        assert "pivot.npy" in by_name(files) and "group.zip" not in by_name(files)
    finally:
        client.close()


def test_all_faces_without_find_faces_finds_them_and_a_one_face_photo_stays_one_face(url, group_photo):
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(group_photo)), api_name="/align")  # an API user who skips /find_faces
        status, pivots, *_, files = client.predict(*SETTINGS, "all", api_name="/invert")
        assert status.startswith("Inverted all 2 faces") and image(pivots).size == (64, 32)
        assert "group.zip" in by_name(files)
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        preview, choice, _, _ = client.predict(api_name="/find_faces")
        assert choice["visible"] is False and preview["visible"] is False
        status, pivot, *_ = client.predict(*SETTINGS, "all", api_name="/invert")  # one face: as today
        assert status.startswith("Inverted in") and image(pivot).size == (32, 32)
    finally:
        client.close()


def test_faces_over_the_cap_are_skipped_naming_the_flag(editor, group_photo, tmp_path):
    store = app.session_store(app.AppOptions(model="tiny"))
    handlers = app.SessionHandlers(editor, store, tmp_path, max_faces=1)
    photo = editor.align(group_photo.read_bytes())
    group, preview, choice, _, status = handlers.find_faces(photo)
    assert len(group.group.faces) == 1 and choice.visible is False and preview.visible is True
    assert re.search(r"\. The face at \(\d+, \d+\) is skipped: over the limit of 1 faces per photo \(the app's "
                     r"--max-faces\); the largest faces are kept\.$", status), status
    assert app.parse_args(["--max-faces", "3"]).max_faces == 3


@pytest.mark.parametrize("phase, step, identity, expected", [
    ("projection", 2, 1, "**Projection (finding the pivot) of face 2 of 3** · step 2/4"),
    ("tuning", 3, 0, "**Pivotal tuning of all 3 faces, this update face 1 of 3** · step 3/4"),
    ("tuning", 3, None, "**Pivotal tuning of all 3 faces** · step 3/4"),
])
def test_progress_names_the_face(phase, step, identity, expected):
    progress = app.Progress(phase=phase, step=step, total=4, identity=identity, elapsed_s=2.0)
    assert app.describe_progress(progress, "w", 3).startswith(expected)
    assert app.describe_progress(progress, "w", 1).startswith(
        "**Projection (finding the pivot)** ·" if phase == "projection" else "**Pivotal tuning** ·")
