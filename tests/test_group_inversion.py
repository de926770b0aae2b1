"""Group photos end to end on the tiny generator: every face inverted into one tuned generator (pipeline and CLI),
edited per face or all, and pasted back into the one photo."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import group_photos
from alignment import FacePlacement, face_mask
from pti.cli import main as run_cli
from pti.config import preset
from pti.pipeline import PTIPipeline
from pti.tuning import TunedGenerator

CONFIG = preset("custom", projection={"num_steps": 3, "learning_rate": 0.05, "w_avg_samples": 1000},
                tuning={"num_steps": 4, "learning_rate": 3e-3, "early_stop_lpips": None})


@pytest.fixture(scope="module")
def group_photo(tmp_path_factory):
    """The side-by-side group photo, as a file."""
    path = tmp_path_factory.mktemp("group") / "group.png"
    group_photos.side_by_side().save(path)
    return path


@pytest.fixture(scope="module")
def inverted(group_photo, tmp_path_factory, landmarks_model_path):
    """`invert --all-faces --paste-back` on the group photo, with the tiny generator and a few steps."""
    out = tmp_path_factory.mktemp("inverted")
    argv = ["invert", str(group_photo), "--all-faces", "--paste-back", "--out", str(out), "--model", "tiny",
            "--device", "cpu", "--preset", "fast", "--projection-steps", "3", "--tuning-steps", "3",
            "--lpips-random", "--predictor", str(landmarks_model_path)]
    assert run_cli(argv) == 0
    return out


def placements(out) -> list[FacePlacement]:
    """The faces' places as `invert` wrote them in faces.json."""
    data = json.loads((out / "faces.json").read_text())
    return [FacePlacement(quad=np.array(face["quad"]), landmarks=np.array(face["landmarks"]),
                          original_size=tuple(data["size"])) for face in data["faces"]]


def changed_pixels(image_path, photo_path) -> np.ndarray:
    """(height, width) bool: where two images of the same size differ."""
    return (np.asarray(Image.open(image_path).convert("RGB")) != np.asarray(Image.open(photo_path))).any(axis=2)


def test_the_pipeline_tunes_one_generator_for_every_face(landmarks_model_path):
    pipeline = PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False, predictor_path=landmarks_model_path)
    inversion = pipeline.invert_group(group_photos.side_by_side(), seed=1)
    result = inversion.result
    assert len(inversion.group.faces) == len(result.identities) == len(result.tuned.pivots) == 2
    assert inversion.group.skipped == ()
    assert result.tuned.steps_run == 2 * CONFIG.tuning.num_steps  # the official multi-ID schedule
    lefts = [identity.aligned.box.left for identity in result.identities]
    assert lefts == sorted(lefts)
    for identity, face in zip(result.identities, inversion.group.faces):
        assert identity.aligned is face
        assert identity.metrics_tuned.mse < identity.metrics_original.mse  # better than its pivot
        assert identity.metrics_tuned.lpips < identity.metrics_original.lpips


def test_invert_all_faces_writes_each_face_and_the_pasted_photo(inverted, group_photo, capsys):
    report = json.loads((inverted / "metrics.json").read_text())
    assert [face["number"] for face in report["faces"]] == [1, 2] and report["skipped"] == []
    for face in report["faces"]:
        folder = inverted / face["folder"]
        assert Image.open(folder / "aligned.png").size == (1024, 1024)
        assert Image.open(folder / "pivot_tuned.png").size == (32, 32)
        assert face["pti"]["mse"] < face["w_projection"]["mse"]
    tuned = TunedGenerator.load(inverted)
    assert len(tuned.pivots) == 2 and report["files"]["pivot"] == "pivots.npz"
    photo = Image.open(group_photo)
    assert Image.open(inverted / "faces.png").size[0] == 1024  # the numbered preview
    assert Image.open(inverted / "pasted.png").size == photo.size
    masks = [face_mask(place) for place in placements(inverted)]
    changed = changed_pixels(inverted / "pasted.png", group_photo)
    assert not (changed & (masks[0] == 0) & (masks[1] == 0)).any()  # outside every mask: the photo's pixels
    assert all((changed & (mask > 0.5)).mean() > 0 for mask in masks)  # each face pasted


def test_edit_every_face_or_one_and_paste_back(inverted, group_photo, tmp_path):
    common = ["edit", "--pivot", str(inverted / "pivots.npz"), "--weights", str(inverted / "tuned.safetensors"),
              "--demo-edits", "--edit", "smile=2", "--edit", "age=-1", "--paste-back", str(inverted / "faces.json")]
    masks = [face_mask(place) for place in placements(inverted)]

    assert run_cli([*common, "--out", str(tmp_path / "all")]) == 0
    for number in (1, 2):
        steps = sorted(path.name for path in (tmp_path / "all" / f"face_{number}").glob("step_*.png"))
        assert steps == ["step_00_start.png", "step_01_smile+2.png", "step_02_age-1.png"]
    changed = changed_pixels(tmp_path / "all" / "pasted.png", group_photo)
    assert all((changed & (mask > 0.5)).any() for mask in masks)

    assert run_cli([*common, "--face", "2", "--out", str(tmp_path / "second")]) == 0
    assert not (tmp_path / "second" / "face_1").exists() and (tmp_path / "second" / "face_2").is_dir()
    changed = changed_pixels(tmp_path / "second" / "pasted.png", group_photo)
    assert not (changed & (masks[1] == 0)).any() and (changed & (masks[1] > 0.5)).any()  # face 2 alone

    # A chain per face: face 1 edited into the photo where face 2 already was.
    assert run_cli([*common[:-4], "--edit", "pose=1", *common[-2:], "--face", "1", "--paste-into",
                    str(tmp_path / "second" / "pasted.png"), "--out", str(tmp_path / "both")]) == 0
    both = np.asarray(Image.open(tmp_path / "both" / "pasted.png"))
    second = np.asarray(Image.open(tmp_path / "second" / "pasted.png"))
    face_2_alone = (masks[1] > 0) & (masks[0] == 0)
    assert np.array_equal(both[face_2_alone], second[face_2_alone])
    assert (changed_pixels(tmp_path / "both" / "pasted.png", tmp_path / "second" / "pasted.png")
            & (masks[0] > 0.5)).any()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--face", "3"], "--face 3: .* holds 2 face\\(s\\), so K must be 1..2"),
        (["--paste-into", "x.png"], "--paste-into is where --paste-back pastes"),
    ],
)
def test_edit_bad_face_options(inverted, tmp_path, capsys, extra, message):
    argv = ["edit", "--pivot", str(inverted / "pivots.npz"), "--weights", str(inverted / "tuned.safetensors"),
            "--demo-edits", "--edit", "smile=1", "--out", str(tmp_path / "e"), *extra]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


def test_all_faces_and_a_face_index_conflict(group_photo, tmp_path, capsys, landmarks_model_path):
    argv = ["invert", str(group_photo), "--all-faces", "--face-index", "1", "--out", str(tmp_path), "--model", "tiny",
            "--lpips-random", "--predictor", str(landmarks_model_path)]
    assert run_cli(argv) == 1
    assert "--face-index picks one face and --all-faces inverts every face" in capsys.readouterr().err
