"""`invert` and `eval` sub-commands end to end on a real photo with the tiny generator and random LPIPS backbones."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FACES_DIR
from PIL import Image

from pti.cli import main as run_cli
from pti.tuning import TunedGenerator


@pytest.fixture()
def quick_options(landmarks_model_path):
    return ["--model", "tiny", "--device", "cpu", "--preset", "fast", "--projection-steps", "3",
            "--tuning-steps", "3", "--lpips-random", "--predictor", str(landmarks_model_path)]


def test_invert_writes_every_output(tmp_path, quick_options, capsys):
    out = tmp_path / "result"
    assert run_cli(["invert", str(FACES_DIR / "astronaut.png"), "--out", str(out), *quick_options]) == 0
    assert Image.open(out / "aligned.png").size == (1024, 1024)
    assert Image.open(out / "pivot_original.png").size == Image.open(out / "pivot_tuned.png").size == (32, 32)
    assert np.load(out / "pivot.npy").shape == (1, 32)
    report = json.loads((out / "metrics.json").read_text())
    assert report["projection"]["steps"] == 3 and report["tuning"]["steps"] == 3
    assert report["config"]["tuning"]["locality"]["enabled"] is True
    assert set(report["pti"]) == {"mse", "lpips", "ms_ssim", "identity_distance"}
    tuned = TunedGenerator.load(out)
    assert np.array_equal(tuned.pivots[0].w.numpy(), np.load(out / "pivot.npy"))
    captured = capsys.readouterr()
    assert "[projection] step 3/3" in captured.err and "[tuning] step 3/3" in captured.err
    assert "PTI: MSE" in captured.out


def test_eval_reports_table_1_and_locality(tmp_path, quick_options, capsys):
    report_path = tmp_path / "report.json"
    argv = ["eval", str(FACES_DIR / "astronaut.png"), "--out", str(report_path), "--locality-latents", "2",
            *quick_options]
    assert run_cli(argv) == 0
    report = json.loads(report_path.read_text())
    assert len(report["images"]) == 1
    for row in ("w_projection", "pti", "pti_no_locality"):
        assert report["mean"][row]["mse"] > 0 and 0 <= report["mean"][row]["ms_ssim"] <= 1
    for variant in ("with_regularizer", "without_regularizer"):
        assert report["locality"][variant]["lpips"] > 0 and report["locality"][variant]["mse"] > 0
    assert report["locality"]["num_latents"] == 2
    table = capsys.readouterr().out
    assert "W projection" in table and "PTI, no locality reg." in table and "without regulariser" in table


def test_a_photo_without_a_face_is_a_clear_error(tmp_path, quick_options, capsys):
    photo = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(photo)
    assert run_cli(["invert", str(photo), "--out", str(tmp_path / "out"), *quick_options]) == 1
    assert "error: no face was found" in capsys.readouterr().err


def test_bad_step_count_is_a_clear_error(tmp_path, quick_options, capsys):
    options = [o if o != "3" else "-2" for o in quick_options]
    assert run_cli(["invert", str(FACES_DIR / "astronaut.png"), "--out", str(tmp_path), *options]) == 1
    assert "--projection-steps must be >= 1" in capsys.readouterr().err
