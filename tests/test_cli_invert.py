"""`invert` and `eval` sub-commands end to end on a real photo with the tiny generator and random LPIPS backbones;
e4e pivots from a tiny e4e (released architecture, random weights) saved in the released checkpoint layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FACES_DIR
from PIL import Image
from test_metrics import library_ms_ssim
from test_oracles import package_lpips
from tiny_e4e import save_released_layout, tiny_e4e

from pti.cli import main as run_cli
from pti.images import pil_to_tensor, tensor_to_pil
from pti.losses import build_lpips
from pti.tuning import TunedGenerator
from pti.weights import load_generator


@pytest.fixture()
def quick_options(landmarks_model_path):
    return ["--model", "tiny", "--device", "cpu", "--preset", "fast", "--projection-steps", "3",
            "--tuning-steps", "3", "--lpips-random", "--predictor", str(landmarks_model_path)]


@pytest.fixture(scope="module")
def e4e_checkpoint(tmp_path_factory):
    """A tiny e4e for the tiny generator (8 x 32 W+ codes) in the layout of e4e_ffhq_encode.pt."""
    path = tmp_path_factory.mktemp("e4e") / "tiny_e4e.pt"
    yield save_released_layout(tiny_e4e(load_generator("tiny")), path)
    path.unlink()


def assert_metrics_are_the_outputs(out, report, tuned):
    """metrics.json recomputed from the written files: the pivot rendered by the original and the tuned generator
    (the PNGs are these renderings rounded) against aligned.png at the generator's size; LPIPS with the lpips
    package (the CLI's random AlexNet backbone, seed 0), MS-SSIM from pytorch-msssim's per-scale terms."""
    target = pil_to_tensor(Image.open(out / "aligned.png"), size=32)
    network = package_lpips(build_lpips("alex", pretrained=False))
    renderings = {"w_projection": render(load_generator("tiny"), tuned.pivots[0].ws),
                  "pti": tuned.render(tuned.pivots[0])}
    for row, png in (("w_projection", "pivot_original.png"), ("pti", "pivot_tuned.png")):
        rendering = renderings[row]
        assert np.array_equal(np.asarray(Image.open(out / png).convert("RGB")),
                              np.asarray(tensor_to_pil(rendering)[0]))
        assert report[row]["mse"] == pytest.approx(float(((rendering - target) ** 2).mean()), rel=1e-5)
        assert report[row]["lpips"] == pytest.approx(network(rendering, target).item(), rel=1e-5)
        assert report[row]["ms_ssim"] == pytest.approx(library_ms_ssim(rendering, target, 2).item(), abs=1e-5)
    assert report["pti"]["mse"] < report["w_projection"]["mse"]


def render(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const", force_fp32=True)


def test_invert_writes_every_output(tmp_path, quick_options, capsys):
    out = tmp_path / "result"
    assert run_cli(["invert", str(FACES_DIR / "astronaut.png"), "--out", str(out), *quick_options]) == 0
    assert Image.open(out / "aligned.png").size == (1024, 1024)
    assert Image.open(out / "pivot_original.png").size == Image.open(out / "pivot_tuned.png").size == (32, 32)
    assert np.load(out / "pivot.npy").shape == (1, 32)
    report = json.loads((out / "metrics.json").read_text())
    assert report["pivot"] == {"method": "w", "steps": 3, "seconds": report["pivot"]["seconds"]}
    assert report["pivot"]["seconds"] > 0 and report["tuning"]["steps"] == 3
    metrics = {"mse", "lpips", "ms_ssim", "identity_similarity", "identity_distance"}
    assert set(report["w_projection"]) == set(report["pti"]) == set(report["metrics"]) == metrics
    assert "pixels in [-1, 1]" in report["metrics"]["mse"]
    assert report["config"]["tuning"]["locality"]["enabled"] is True
    tuned = TunedGenerator.load(out)
    assert np.array_equal(tuned.pivots[0].w.numpy(), np.load(out / "pivot.npy"))
    assert_metrics_are_the_outputs(out, report, tuned)
    captured = capsys.readouterr()
    assert "[projection] step 3/3" in captured.err and "[tuning] step 3/3" in captured.err
    assert "W projection (" in captured.out and "PTI: MSE" in captured.out and "MSE: pixels in [-1, 1]" in captured.out


def test_invert_with_the_e4e_pivot(tmp_path, quick_options, e4e_checkpoint, capsys):
    out = tmp_path / "result"
    argv = ["invert", str(FACES_DIR / "astronaut.png"), "--out", str(out), "--pivot", "e4e", "--e4e",
            str(e4e_checkpoint), *quick_options]
    assert run_cli(argv) == 0
    pivot = np.load(out / "pivot.npy")
    assert pivot.shape == (1, 8, 32)  # W+: one code per layer of the tiny generator
    report = json.loads((out / "metrics.json").read_text())
    assert report["pivot"]["method"] == "e4e" and report["pivot"]["steps"] == 0 and report["pivot"]["seconds"] > 0
    assert "w_projection" not in report and report["e4e"]["mse"] > report["pti"]["mse"]
    tuned = TunedGenerator.load(out)
    assert tuned.pivots[0].source == "e4e" and np.array_equal(tuned.pivots[0].w.numpy(), pivot)
    captured = capsys.readouterr()
    assert "[projection] step 1/1" in captured.err and "[tuning] step 3/3" in captured.err
    assert captured.out.startswith("e4e (")


def test_eval_reports_both_pivots_side_by_side_and_locality(tmp_path, quick_options, e4e_checkpoint, capsys):
    report_path = tmp_path / "report.json"
    argv = ["eval", str(FACES_DIR / "astronaut.png"), "--out", str(report_path), "--locality-latents", "2",
            "--e4e", str(e4e_checkpoint), *quick_options]
    assert run_cli(argv) == 0
    report = json.loads(report_path.read_text())
    assert len(report["images"]) == 1 and report["settings"]["e4e"] == str(e4e_checkpoint)
    rows = ("e4e", "w_projection", "pti", "pti_e4e", "pti_no_locality")
    assert list(report["mean"]) == list(rows)
    for row in rows:
        assert report["mean"][row]["mse"] > 0 and 0 <= report["mean"][row]["ms_ssim"] <= 1
        assert report["images"][0][row]["seconds"] == report["mean"][row]["seconds"] > 0
    mean = report["mean"]
    assert mean["pti_e4e"]["mse"] < mean["e4e"]["mse"] and mean["pti"]["mse"] < mean["w_projection"]["mse"]
    assert mean["pti_e4e"]["seconds"] > mean["e4e"]["seconds"]
    assert mean["pti"]["seconds"] > mean["w_projection"]["seconds"]
    for variant in ("with_regularizer", "without_regularizer"):
        assert report["locality"][variant]["lpips"] > 0 and report["locality"][variant]["mse"] > 0
    assert report["locality"]["num_latents"] == 2
    table = capsys.readouterr().out
    for title in ("e4e alone", "W projection alone", "PTI, W pivot", "PTI, e4e pivot", "PTI, W pivot, no loc. reg.",
                  "Time s", "without regulariser"):
        assert title in table


def eval_without_e4e(tmp_path, quick_options, capsys) -> tuple[dict, str]:
    """`eval --no-e4e` on the astronaut photo: (the JSON report, the printed table)."""
    report_path = tmp_path / "report.json"
    argv = ["eval", str(FACES_DIR / "astronaut.png"), "--out", str(report_path), "--locality-latents", "1",
            "--no-e4e", *quick_options]
    assert run_cli(argv) == 0
    return json.loads(report_path.read_text()), capsys.readouterr().out


def test_eval_names_every_metric_with_its_scale(tmp_path, quick_options, capsys):
    """The JSON and the printed table say what each number is: MSE's pixel range, the identity network."""
    report, table = eval_without_e4e(tmp_path, quick_options, capsys)
    names = ["mse", "lpips", "ms_ssim", "identity_similarity", "identity_distance"]
    assert list(report["metrics"]) == names
    assert "pixels in [-1, 1]" in report["metrics"]["mse"] and "[0, 1]" in report["metrics"]["ms_ssim"]
    assert "cosine similarity" in report["metrics"]["identity_similarity"]
    assert "dlib" in report["metrics"]["identity_similarity"]
    assert "not the face-recognition network of the PTI paper" in report["metrics"]["identity_similarity"]
    for row in ("w_projection", "pti", "pti_no_locality"):
        assert list(report["mean"][row]) == [*names, "seconds"]
        assert set(report["images"][0][row]) == {*names, "seconds"}
    header = table.splitlines()[0].split()
    assert header == ["MSE", "LPIPS", "MS-SSIM", "ID", "sim", "ID", "dist", "Time", "s"]
    assert "MSE: pixels in [-1, 1]" in table and "ID sim: cosine similarity of face descriptors" in table
    assert "dlib's face-recognition ResNet" in table and "not the face-recognition network of the PTI paper" in table


def test_eval_without_e4e_leaves_its_rows_out(tmp_path, quick_options, capsys):
    report, table = eval_without_e4e(tmp_path, quick_options, capsys)
    assert list(report["mean"]) == ["w_projection", "pti", "pti_no_locality"] and report["settings"]["e4e"] is None
    assert "W projection alone" in table and "e4e alone" not in table and "e4e pivot" not in table


def test_an_e4e_for_another_generator_is_a_clear_error(tmp_path, quick_options, e4e_checkpoint, capsys):
    checkpoint = torch.load(e4e_checkpoint, weights_only=True)
    state_dict = checkpoint["state_dict"]
    for key in [k for k in state_dict if k.startswith("encoder.styles.7.")]:  # a ninth head, like the eighth
        state_dict[key.replace("styles.7.", "styles.8.")] = state_dict[key]
    nine_styles = tmp_path / "e4e_9_styles.pt"
    torch.save({"state_dict": state_dict, "latent_avg": torch.zeros(9, 32), "opts": {}}, nine_styles)
    for command in ("invert", "eval"):
        argv = [command, str(FACES_DIR / "astronaut.png"), "--out", str(tmp_path / command), "--pivot", "e4e",
                "--e4e", str(nine_styles), *quick_options]
        if command == "eval":  # eval always runs both pivots
            argv = [a for a in argv if a not in ("--pivot", "e4e")]
        assert run_cli(argv) == 1
        err = capsys.readouterr().err
        assert "error: the e4e encoder gives W+ codes of shape (9, 32) but the generator takes (8, 32)" in err
        assert not (tmp_path / command).exists()


def test_a_missing_e4e_file_is_a_clear_error(tmp_path, quick_options, capsys):
    argv = ["invert", str(FACES_DIR / "astronaut.png"), "--out", str(tmp_path / "out"), "--pivot", "e4e",
            "--e4e", str(tmp_path / "absent.pt"), *quick_options]
    assert run_cli(argv) == 1
    assert "error: e4e checkpoint not found" in capsys.readouterr().err


def test_a_photo_without_a_face_is_a_clear_error(tmp_path, quick_options, capsys):
    photo = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(photo)
    assert run_cli(["invert", str(photo), "--out", str(tmp_path / "out"), *quick_options]) == 1
    assert "error: no face was found" in capsys.readouterr().err


def test_bad_step_count_is_a_clear_error(tmp_path, quick_options, capsys):
    options = [o if o != "3" else "-2" for o in quick_options]
    assert run_cli(["invert", str(FACES_DIR / "astronaut.png"), "--out", str(tmp_path), *options]) == 1
    assert "--projection-steps must be >= 1" in capsys.readouterr().err
