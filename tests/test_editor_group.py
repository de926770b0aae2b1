"""Group photos in the face editor (what the app calls): every face into one tuned generator, per-face progress,
chains rendered for several faces in one call, downloads that the command line can replay, sessions parked on disk."""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import group_photos
from editing_directions.chain import EditChain
from editing_directions.edit import Edit
from pti.cli import main as run_cli
from pti.editor import FaceEditor, GroupSession, InversionSettings
from pti.generator_io import load_generator_file
from pti.images import pil_to_tensor, tensor_to_pil
from pti.progress import Progress
from pti.serving.durations import ZEROGPU_PRIOR, GpuDurations
from pti.session_spill import SessionSpiller
from pti.session_store import estimate_nbytes

SETTINGS = InversionSettings(projection_steps=3, tuning_steps=2, locality=True)


@pytest.fixture(scope="module")
def editor(landmarks_model_path):
    return FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False)


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    buffer = io.BytesIO()
    group_photos.side_by_side().save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def group(editor, photo_bytes):
    return editor.align_group(photo_bytes)


@pytest.fixture(scope="module")
def inverted(editor, group) -> tuple[list[Progress], GroupSession]:
    items = list(editor.invert_group_steps(group, SETTINGS))
    return items[:-1], items[-1]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_every_face_is_aligned_left_to_right_with_a_numbered_preview(editor, group, photo_bytes):
    faces = group.group.faces
    assert len(faces) == 2 and group.group.skipped == ()
    assert faces[0].quad[:, 0].mean() < faces[1].quad[:, 0].mean()  # face 1 is the left one
    single = editor.align(photo_bytes)  # the one-face path aligns the most confident face identically
    same = [index for index, face in enumerate(faces) if face.face_index == single.aligned.face_index]
    assert len(same) == 1 and np.array_equal(pixels(faces[same[0]].image), pixels(single.aligned.image))
    assert group.face(1).aligned is faces[1] and group.face(1).encoded is photo_bytes
    preview = editor.faces_preview(group)
    width, height = group.group.original_size
    assert preview.size == (1024, round(height * 1024 / width))  # the photo, scaled to at most 1024 px
    scaled = group.original.resize(preview.size, Image.Resampling.LANCZOS)
    assert np.abs(pixels(preview) - pixels(scaled)).max() > 100  # the boxes are drawn


def test_one_generator_is_tuned_for_every_face_with_progress_per_face(inverted):
    progress, session = inverted
    projection = [(p.identity, p.step) for p in progress if p.phase == "projection"]
    assert projection == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]  # each face's projection, in order
    tuning = [(p.identity, p.step, p.total) for p in progress if p.phase == "tuning"]
    assert tuning == [(0, 1, 4), (1, 2, 4), (0, 3, 4), (1, 4, 4)]  # the multi-ID schedule, face by face
    assert isinstance(session, GroupSession) and len(session.faces) == 2
    assert session.faces[0].inversion.tuned is session.faces[1].inversion.tuned is session.tuned
    assert session.tuned.steps_run == 4 and len(session.tuned.pivots) == 2
    timings = session.faces[0].inversion.timings
    assert timings.projection_steps == 6 and timings.tuning_steps == 4  # both faces' projections counted


def test_reported_metrics_are_each_face_against_its_own_aligned_face(inverted):
    _, session = inverted
    for face in session.faces:
        with torch.no_grad():
            rendered = session.tuned.render(face.inversion.pivot)
        target = pil_to_tensor(face.photo.aligned.image, size=32)
        assert face.inversion.tuned_render.mse == pytest.approx(float(((rendered - target) ** 2).mean()), abs=1e-6)
        assert np.array_equal(pixels(face.inversion.tuned_render.image), pixels(tensor_to_pil(rendered)[0]))
    first, second = (face.inversion.tuned_render.mse for face in session.faces)
    assert first != second


def test_chains_of_several_faces_render_in_one_call_as_each_alone(editor, inverted, monkeypatch):
    _, session = inverted
    library = editor._require_library()
    chains = {0: (Edit("interfacegan", "age", 2.0),),
              1: (Edit("interfacegan", "smile", -1.0), Edit.text("a smiling face", 4.0, neutral="a face"))}
    calls = []
    render = editor.run_render
    monkeypatch.setattr(editor, "run_render", lambda *args: calls.append(args[1].shape[0]) or render(*args))
    images = editor.render_group(session, chains)
    assert calls == [2 + 3]  # one call for both faces' steps
    for index, edits in chains.items():
        expected = EditChain(library, edits).render(session.tuned.generator, session.faces[index].inversion.pivot.ws,
                                                    force_fp32=True)
        assert len(images[index]) == len(expected)
        for got, want in zip(images[index], expected):  # batched with another face's codes: within one level
            assert np.abs(pixels(got) - pixels(want)).max() <= 1
    with pytest.raises(ValueError, match="faces are numbered 0 to 1, got \\[2\\]"):
        editor.render_group(session, {2: ()})


def test_group_downloads_replay_with_the_command_line(editor, inverted, tmp_path):
    _, session = inverted
    edits = (Edit("interfacegan", "age", 2.0),)
    images = editor.render_group(session, {1: edits})
    faces = (session.faces[0], dataclasses.replace(session.faces[1], edits=edits, step_images=images[1]))
    inversion_dir, edits_dir = tmp_path / "inversion", tmp_path / "edits"
    inversion_dir.mkdir()
    edits_dir.mkdir()
    session = GroupSession(photo=session.photo, faces=faces)
    session = dataclasses.replace(session, files=editor.write_group_inversion_files(session, inversion_dir))
    pasted = editor.paste_back_group(session, [face.final_image for face in session.faces])
    downloads = editor.write_group_downloads(session, edits_dir, pasted=pasted)
    names = [path.name for path in downloads.paths]
    assert names == ["group.zip", "pasted_back.png", "face_1_final.png", "face_2_final.png", "faces.png",
                     "face_1_aligned.png", "face_2_aligned.png", "face_1_edit_chain.json", "face_2_edit_chain.json",
                     "pivots.npz", "tuned.safetensors", "faces.json", "photo.jpg"]
    with zipfile.ZipFile(downloads.archive) as archive:
        assert sorted(archive.namelist()) == sorted(set(names) - {"group.zip", "tuned.safetensors"})
        unpacked = tmp_path / "unpacked"
        archive.extractall(unpacked)
    assert (unpacked / "photo.jpg").read_bytes() == session.photo.encoded
    assert json.loads((unpacked / "face_2_edit_chain.json").read_text())["edits"][0]["name"] == "age"
    assert json.loads((unpacked / "face_1_edit_chain.json").read_text())["edits"] == []
    # The weights as saved render each face's pivot as the session does.
    generator = load_generator_file(inversion_dir / "tuned.safetensors")
    with np.load(unpacked / "pivots.npz") as archive:
        pivots = [torch.from_numpy(archive[f"pivot_{i}"]) for i in range(2)]
    for pivot, face in zip(pivots, session.faces):
        with torch.no_grad():
            rendered = generator.synthesis(pivot[:, None].repeat(1, generator.num_ws, 1), noise_mode="const",
                                           force_fp32=True)
        assert np.array_equal(pixels(tensor_to_pil(rendered)[0]), pixels(face.step_images[0]))
    # `python -m pti edit` on the unpacked files (faces.json names the photo beside it) pastes face 2 back as the app.
    out = tmp_path / "cli"
    argv = ["edit", "--pivot", str(unpacked / "pivots.npz"), "--weights", str(inversion_dir / "tuned.safetensors"),
            "--demo-edits", "--edit", "age=2", "--face", "2", "--paste-back", str(unpacked / "faces.json"),
            "--out", str(out)]
    assert run_cli(argv) == 0
    cli_pasted = Image.open(out / "pasted.png").convert("RGB")
    assert cli_pasted.size == pasted.size
    # The CLI pastes face 2 alone, the app both faces (face 1 unedited): they agree where the CLI changed the photo.
    face_2_region = (pixels(cli_pasted) != pixels(session.photo.original)).any(axis=2)
    assert face_2_region.sum() > 1000
    assert np.array_equal(pixels(cli_pasted)[face_2_region], pixels(pasted)[face_2_region])


def test_a_group_session_parks_on_disk_once_and_comes_back_shared(inverted, tmp_path):
    _, session = inverted
    spiller = SessionSpiller(tmp_path)
    parked = spiller.park("someone", session)
    assert len(list(tmp_path.iterdir())) == 1 and (parked.directory / "pivots.npz").is_file()
    assert parked.memory_bytes < estimate_nbytes(session) - 100_000  # the tiny generator's weights left memory
    back = spiller.unpark(parked)
    assert back.faces[0].inversion.tuned is back.faces[1].inversion.tuned
    original, restored = session.tuned.generator.state_dict(), back.tuned.generator.state_dict()
    assert all(torch.equal(original[name], restored[name]) for name in original)
    assert back.tuned.steps_run == session.tuned.steps_run and back.photo is session.photo
    spiller.discard(parked)
    assert list(tmp_path.iterdir()) == []


def test_the_gpu_time_asked_for_scales_with_the_faces():
    durations = GpuDurations()
    prior = ZEROGPU_PRIOR
    for faces in (1, 3):
        projection = durations.inversion(projection_steps=100, tuning_steps=50, locality=True, pivot="w", faces=faces)
        expected = (prior.setup + faces * 100 * prior.projection_step
                    + faces * 50 * prior.tuning_step * prior.locality_factor)
        assert projection.seconds == pytest.approx(expected)
        e4e = durations.inversion(projection_steps=100, tuning_steps=50, locality=False, pivot="e4e", faces=faces)
        assert e4e.seconds == pytest.approx(prior.setup + prior.e4e_pivot + faces * 50 * prior.tuning_step)


def test_the_estimate_scales_with_the_faces(editor):
    one, three = (editor.estimate(SETTINGS, faces=faces).seconds for faces in (1, 3))
    times = editor._require_pipeline()._step_times
    locality = editor.config_for(SETTINGS).tuning.locality
    projection = times.projection_setup + SETTINGS.projection_steps * times.projection_step
    tuning = SETTINGS.tuning_steps * (times.tuning_step
                                      + times.locality_extra * locality.num_samples / locality.interval)
    expected_extra = 2 * (projection + tuning)  # two more faces: a projection and the tuning updates of each
    assert three - one == pytest.approx(expected_extra, rel=1e-6)
