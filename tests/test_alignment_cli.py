"""`python -m alignment PHOTO -o OUT.png [--face N] [--size S]`: the aligned face, the faces found, clear errors."""
from __future__ import annotations

import runpy
import sys

import pytest
import skimage.data
from PIL import Image

from alignment.__main__ import main
from conftest import FACES_DIR


def test_cli_writes_the_aligned_face(tmp_path, capsys, landmarks_model_path):
    out = tmp_path / "aligned.png"
    status = main([str(FACES_DIR / "grace_hopper.jpg"), "-o", str(out), "--size", "256",
                   "--predictor", str(landmarks_model_path)])
    assert status == 0
    with Image.open(out) as image:
        assert image.size == (256, 256) and image.mode == "RGB"
    printed = capsys.readouterr().out
    assert "face 0: score" in printed and "<- aligned" in printed and "(256x256)" in printed


def test_cli_errors_are_one_clear_line(tmp_path, capsys, landmarks_model_path):
    out = tmp_path / "aligned.png"
    cat = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    assert main([str(cat), "-o", str(out), "--predictor", str(landmarks_model_path)]) == 1
    assert "error: no face was found" in capsys.readouterr().err
    assert main([str(FACES_DIR / "astronaut.png"), "-o", str(out), "--face", "3",
                 "--predictor", str(landmarks_model_path)]) == 1
    assert "error: face_index 3 is out of range" in capsys.readouterr().err
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert main([str(text), "-o", str(out), "--predictor", str(landmarks_model_path)]) == 1
    assert "not an image" in capsys.readouterr().err
    assert not out.exists()


def test_python_dash_m_alignment(tmp_path, monkeypatch, landmarks_model_path):
    # What `python -m alignment ...` runs, executed in this process (a fresh interpreter would reload the model).
    out = tmp_path / "face.png"
    argv = ["alignment", str(FACES_DIR / "astronaut.png"), "-o", str(out), "--size", "128",
            "--predictor", str(landmarks_model_path)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, "alignment.__main__", raising=False)  # imported above; runpy runs it afresh
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("alignment", run_name="__main__")
    assert exit_info.value.code == 0
    with Image.open(out) as image:
        assert image.size == (128, 128)
