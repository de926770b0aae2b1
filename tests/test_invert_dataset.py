"""`invert-dataset` on a folder of photos (the test photos, variants, one without a face, one corrupt file) with the
tiny generator: one process in this one, two ranks under torchrun (gloo on the CPU), a run stopped by SIGTERM and
resumed; and the pieces (image lists, atomic folders, the summary's statistics) on their own."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from conftest import FACES_DIR
from PIL import Image, ImageOps

from pti.cli import main as run_cli
from pti.dataset.outputs import atomic_folder, image_folder
from pti.dataset.run import ImageRecord, RankProgress, RunOptions, image_seed, process_image
from pti.dataset.sources import DatasetImage, DatasetSourceError, list_images
from pti.dataset.summary import METRICS, per_image_csv, summarize
from pti.dataset.workers import rank_device, start_workers
from pti.progress import Cancelled
from pti.tuning import TunedGenerator

REPO = Path(__file__).resolve().parents[1]
GOOD = ["astronaut.png", "grace_hopper.jpg", "sub/astronaut_mirrored.jpg", "sub/deeper/grace_small.png"]
BAD = {"no_face.png": "NoFaceError: no face was found", "sub/corrupt.jpg": "ImageInputError: the file 'corrupt.jpg' "
                                                                           "is corrupt"}
METRIC_KEYS = [key for key, _ in METRICS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The photos, a mirrored and a smaller variant, a photo without a face and a corrupt file, in sub-folders."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "sub" / "deeper").mkdir(parents=True)
    astronaut, grace = Image.open(FACES_DIR / "astronaut.png"), Image.open(FACES_DIR / "grace_hopper.jpg")
    astronaut.save(root / "astronaut.png")
    grace.save(root / "grace_hopper.jpg")
    ImageOps.mirror(astronaut).save(root / "sub" / "astronaut_mirrored.jpg")
    grace.resize((384, 450)).save(root / "sub" / "deeper" / "grace_small.png")
    Image.fromarray(skimage.data.camera()).save(root / "no_face.png")
    (root / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    (root / "notes.txt").write_text("not an image")
    return root


def options(landmarks: Path, steps: int = 3) -> list[str]:
    return ["--model", "tiny", "--device", "cpu", "--preset", "fast", "--projection-steps", str(steps),
            "--tuning-steps", str(steps), "--lpips-random", "--predictor", str(landmarks)]


@pytest.fixture(scope="module")
def single_run(dataset, tmp_path_factory, landmarks_model_path) -> Path:
    """The dataset inverted by one process (this one)."""
    out = tmp_path_factory.mktemp("single") / "out"
    assert run_cli(["invert-dataset", str(dataset), "--out", str(out), *options(landmarks_model_path)]) == 0
    return out


def results(out: Path) -> dict[str, dict]:
    """Per complete image: its metrics.json record, plus its pivot under 'pivot_array'."""
    found = {}
    for metrics_file in (out / "images").rglob("metrics.json"):
        record = json.loads(metrics_file.read_text())
        record["pivot_array"] = np.load(metrics_file.parent / "pivot.npy")
        found[metrics_file.parent.relative_to(out / "images").as_posix()] = record
    return found


def read_csv(out: Path) -> dict[str, dict]:
    with open(out / "images.csv", newline="") as file:
        return {row["image"]: row for row in csv.DictReader(file)}


def torchrun(argv: list[str], log: Path, *, ranks: int | None = 2) -> subprocess.Popen:
    """Start `torchrun --standalone --nproc-per-node=2 -m pti ...` (as `python -m torch.distributed.run`), or
    `python -m pti ...` alone when `ranks` is None."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return subprocess.Popen([sys.executable, *launcher, "-m", "pti", *argv], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def stop_after_first_image(process: subprocess.Popen, log: Path, signum: int) -> str:
    """Send `signum` to `process` once an image is done; returns the log after it exits."""
    deadline = time.monotonic() + 240
    while " done " not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signum)
    process.wait(timeout=120)
    return log.read_text()


def assert_complete_or_absent(out: Path) -> dict[str, dict]:
    """Every image folder holds all its files, no temporary folder is left; returns the complete images."""
    assert not list(out.rglob(".*partial*"))
    complete = results(out)
    for name in complete:
        assert sorted(p.name for p in image_folder(out, name).iterdir()) == ["metrics.json", "pivot.npy",
                                                                              "reconstruction.png"]
    assert sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.*")
                  if p.is_dir()) == sorted(complete)
    return complete


# --- the pieces ---------------------------------------------------------------------------------------------------


def test_a_folder_lists_its_images_recursively_sorted_without_the_output_folder(dataset, tmp_path):
    names = [image.name for image in list_images(dataset)]
    assert names == sorted(GOOD + list(BAD))  # notes.txt is not an image
    inside = dataset / "out"
    (inside / "images" / "a.png").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(inside / "images" / "a.png" / "reconstruction.png")
    try:
        assert [image.name for image in list_images(dataset, exclude=inside)] == names
    finally:
        (inside / "images" / "a.png" / "reconstruction.png").unlink()
        for folder in (inside / "images" / "a.png", inside / "images", inside):
            folder.rmdir()


def test_a_list_file_names_outputs_after_its_paths(dataset, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# test split\n\n{dataset / 'grace_hopper.jpg'}\nrelative/a.png\n{dataset / 'grace_hopper.jpg'}\n")
    outside = (dataset / "grace_hopper.jpg").resolve()  # not under the list's folder: named by its absolute path
    assert {image.name: image.path for image in list_images(listing)} == {
        outside.as_posix().lstrip("/"): outside, "relative/a.png": (tmp_path / "relative" / "a.png").resolve()}
    with pytest.raises(DatasetSourceError, match="no such folder or list file"):
        list_images(tmp_path / "absent")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DatasetSourceError, match="lists no images"):
        list_images(tmp_path / "empty.txt")


def test_an_image_folder_is_complete_or_absent(tmp_path):
    folder = image_folder(tmp_path, "sub/a.jpg")
    assert folder == tmp_path / "images" / "sub" / "a.jpg"
    with pytest.raises(RuntimeError):
        with atomic_folder(folder) as temporary:
            (temporary / "pivot.npy").write_bytes(b"half")
            raise RuntimeError("killed while writing")
    assert list(folder.parent.iterdir()) == []
    stale = folder.parent / ".a.jpg.partial-99999"  # left by a process killed outright
    stale.mkdir()
    with atomic_folder(folder) as temporary:
        (temporary / "metrics.json").write_text("{}")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["a.jpg"] and (folder / "metrics.json").is_file()


def test_the_summary_is_the_mean_and_sample_std_of_the_complete_images():
    metrics = [{row: {key: value + shift for key, value in zip(METRIC_KEYS, (0.1, 0.2, 0.7, 0.9, 0.3))}
                for row, shift in (("pivot", 0.01 * i), ("pti", -0.01 * i))} for i in range(3)]
    metrics[2]["pti"]["identity_similarity"] = None  # no face found in the reconstruction
    records = [ImageRecord("a", "done", 2.0, metrics=metrics[0]), ImageRecord("b", "skipped", 4.0, metrics=metrics[1]),
               ImageRecord("c", "done", 3.0, metrics=metrics[2]), ImageRecord("d", "failed", None, reason="no face")]
    summary = summarize(records, num_images=5, settings={"pivot": "w"}, wall_s=9.0, devices=["cpu", "cpu"])
    assert summary["counts"] == {"images": 5, "done": 2, "skipped": 1, "failed": 1, "not_reached": 1}
    lpips = [0.20, 0.19, 0.18]
    assert summary["metrics"]["pti"]["lpips"]["mean"] == pytest.approx(0.19)
    assert summary["metrics"]["pti"]["lpips"]["std"] == pytest.approx(float(np.std(lpips, ddof=1)))
    assert summary["metrics"]["pti"]["identity_similarity"] == {"mean": pytest.approx(0.895),
                                                                "std": pytest.approx(float(np.std([0.9, 0.89],
                                                                                                  ddof=1))), "n": 2}
    assert summary["time"]["per_image_s"]["mean"] == 3.0 and summary["time"]["inverted_in_this_run_s"] == 5.0
    assert summary["failed"] == [{"image": "d", "reason": "no face"}]
    rows = list(csv.DictReader(per_image_csv(records, ["a", "b", "c", "d", "e"]).splitlines()))
    assert [(r["image"], r["status"]) for r in rows] == [("a", "done"), ("b", "skipped"), ("c", "done"),
                                                          ("d", "failed"), ("e", "not_reached")]
    assert rows[2]["pti_identity_similarity"] == "" and float(rows[1]["pivot_mse"]) == metrics[1]["pivot"]["mse"]


def test_each_rank_gets_its_own_device_and_one_process_is_rank_zero_of_one(monkeypatch):
    assert rank_device("cpu", 1) == torch.device("cpu")
    assert rank_device("cuda", 1) == torch.device("cuda", 1) and rank_device("cuda:3", 1) == torch.device("cuda", 3)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    workers = start_workers("cpu")
    assert (workers.rank, workers.world_size, workers.distributed) == (0, 1, False)
    assert [workers.claim() for _ in range(3)] == [0, 1, 2]
    assert workers.count_finished(1) == 1 and workers.count_finished(0) == 1
    assert not workers.stop_requested()
    workers.request_stop()
    assert workers.stop_requested() and workers.gather("mine") == ["mine"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rank_zero_shows_a_bar_with_the_rate_and_time_left_and_every_rank_logs_a_line(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = RankProgress(start_workers("cpu"), total=3)
    progress.image_finished(ImageRecord("a.png", "done", 1.5, metrics={"pti": {"lpips": 0.25}}))
    progress.image_finished(ImageRecord("b.png", "failed", None, reason="NoFaceError: no face"))
    progress.close()
    text = terminal.getvalue()
    assert "[rank 0/1] 1/3 done a.png (1.5 s, PTI LPIPS 0.2500) | all ranks " in text
    assert "[rank 0/1] 2/3 failed b.png: NoFaceError: no face | all ranks " in text and "img/s, ETA " in text
    bar = text.replace("\r", "\n").splitlines()
    assert any(line.startswith("invert-dataset:  67%") and "2/3 [" in line and "img" in line for line in bar), text


class FailingPipeline:
    """Stands in for PTIPipeline: its inversion raises `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def invert(self, *args, **kwargs):
        raise self.error


def test_an_image_out_of_memory_is_recorded_with_its_reason_and_a_stop_writes_nothing(tmp_path):
    image, out = DatasetImage(path=tmp_path / "a.png", name="a.png"), tmp_path / "out"
    oom = FailingPipeline(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    record = process_image(oom, image, out, RunOptions(), {}, lambda progress: False)
    assert record == ImageRecord("a.png", "failed", None,
                                 reason="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(Cancelled):
        process_image(FailingPipeline(Cancelled("tuning", 3, 50)), image, out, RunOptions(), {}, lambda p: True)
    assert not out.exists()


def test_an_image_seed_depends_on_the_seed_and_the_name_only():
    assert image_seed(0, "a/b.png") == image_seed(0, "a/b.png") != image_seed(0, "a/c.png")
    assert image_seed(1, "a/b.png") != image_seed(0, "a/b.png") and 0 <= image_seed(2**40, "x") < 2**31


# --- one process --------------------------------------------------------------------------------------------------


def test_every_good_image_is_done_and_every_bad_one_recorded_with_its_reason(single_run, dataset):
    found = results(single_run)
    assert sorted(found) == sorted(GOOD)
    for name, record in found.items():
        folder = image_folder(single_run, name)
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "pivot.npy", "reconstruction.png"]
        assert Image.open(folder / "reconstruction.png").size == (32, 32)
        assert record["pivot_array"].shape == (1, 32) and record["seed"] == image_seed(0, name)
        assert record["source"] == str(dataset / name) and record["tuning"]["steps"] == 3
    rows = read_csv(single_run)
    assert {name: row["status"] for name, row in rows.items()} == {**{n: "done" for n in GOOD},
                                                                    **{n: "failed" for n in BAD}}
    for name, reason in BAD.items():
        assert rows[name]["reason"].startswith(reason)
    summary = json.loads((single_run / "summary.json").read_text())
    assert summary["counts"] == {"images": 6, "done": 4, "skipped": 0, "failed": 2, "not_reached": 0}
    assert [entry["image"] for entry in summary["failed"]] == sorted(BAD)
    assert not list(single_run.rglob(".*partial*"))


def test_the_summary_equals_the_per_image_metrics(single_run):
    found = results(single_run)
    rows = read_csv(single_run)
    summary = json.loads((single_run / "summary.json").read_text())
    for row in ("pivot", "pti"):
        for key in METRIC_KEYS:
            values = [found[name]["metrics"][row][key] for name in GOOD]
            for name in GOOD:  # the CSV holds the very numbers of the per-image JSON
                assert rows[name][f"{row}_{key}"] == ("" if found[name]["metrics"][row][key] is None
                                                      else repr(found[name]["metrics"][row][key]))
            present = [v for v in values if v is not None]
            stats = summary["metrics"][row][key]
            assert stats["n"] == len(present)
            if present:
                assert stats["mean"] == pytest.approx(float(np.mean(present)), rel=1e-12)
                assert stats["std"] == pytest.approx(float(np.std(present, ddof=1)), rel=1e-12)
    assert summary["metrics"]["pti"]["mse"]["mean"] < summary["metrics"]["pivot"]["mse"]["mean"]
    assert summary["time"]["per_image_s"]["mean"] == pytest.approx(statistics.fmean(
        found[name]["seconds"] for name in GOOD))
    markdown = (single_run / "summary.md").read_text()
    assert "| W projection alone |" in markdown and "| PTI |" in markdown and "2 failed" in markdown
    assert f"{summary['metrics']['pti']['lpips']['mean']:.4f} ± " in markdown
    assert "torch " in markdown and '"tiny"' in markdown


def test_a_rerun_skips_complete_images_and_eval_reads_or_runs_the_report(single_run, dataset, landmarks_model_path,
                                                                          capsys):
    before = {name: image_folder(single_run, name).joinpath("metrics.json").stat().st_mtime_ns for name in GOOD}
    capsys.readouterr()
    assert run_cli(["eval", "--dataset", str(dataset), "--out", str(single_run), *options(landmarks_model_path)]) == 0
    captured = capsys.readouterr()
    assert "| PTI |" in captured.out and "4 complete from an earlier run" in captured.out
    after = {name: image_folder(single_run, name).joinpath("metrics.json").stat().st_mtime_ns for name in GOOD}
    assert after == before
    assert {row["status"] for name, row in read_csv(single_run).items() if name in GOOD} == {"skipped"}
    assert run_cli(["eval", "--summary", str(single_run)]) == 0
    assert capsys.readouterr().out.strip() == (single_run / "summary.md").read_text().strip()


def test_aligned_images_are_only_resized_and_weights_are_saved_on_request(tmp_path, landmarks_model_path):
    source = tmp_path / "aligned"
    source.mkdir()
    Image.open(FACES_DIR / "astronaut.png").resize((64, 64)).save(source / "a.png")
    Image.fromarray(skimage.data.camera()).resize((48, 48)).save(source / "b.png")  # no face: not looked for
    Image.open(FACES_DIR / "grace_hopper.jpg").save(source / "c.jpg")  # 512x600: not an aligned crop
    out = tmp_path / "out"
    argv = ["invert-dataset", str(source), "--out", str(out), "--aligned", "--save-weights",
            *options(landmarks_model_path)]
    assert run_cli(argv) == 0
    assert read_csv(out)["c.jpg"]["reason"] == ("ImageInputError: c.jpg is 512x600, not square: --aligned takes "
                                                "square FFHQ-aligned crops (leave --aligned out to align the photo)")
    for name in ("a.png", "b.png"):
        folder = image_folder(out, name)
        assert json.loads((folder / "metrics.json").read_text())["settings"]["aligned"] is True
        tuned = TunedGenerator.load(folder)
        assert np.array_equal(tuned.pivots[0].w.numpy(), np.load(folder / "pivot.npy"))
    # other settings: the complete images are redone, not skipped
    assert run_cli([*argv[:5], *options(landmarks_model_path, steps=2)]) == 0
    assert {name: row["status"] for name, row in read_csv(out).items()} == {"a.png": "done", "b.png": "done",
                                                                             "c.jpg": "failed"}
    assert json.loads((image_folder(out, "a.png") / "metrics.json").read_text())["tuning"]["steps"] == 2


def test_bad_sources_and_option_mixes_are_clear_errors(tmp_path, capsys):
    assert run_cli(["invert-dataset", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 1
    assert "error: no such folder or list file" in capsys.readouterr().err
    assert run_cli(["eval", "--summary", str(tmp_path)]) == 1
    assert "summary.json not found" in capsys.readouterr().err
    assert run_cli(["eval", str(FACES_DIR / "astronaut.png"), "--out", "r.json", "--aligned"]) == 1
    assert "only meaningful with --dataset: --aligned" in capsys.readouterr().err
    assert run_cli(["eval", "--summary", str(tmp_path), "--dataset", str(tmp_path)]) == 1
    assert "exactly one of them" in capsys.readouterr().err


# --- torchrun, two ranks (gloo) -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_do_every_image_once_with_the_results_of_one_process(single_run, dataset, tmp_path,
                                                                       landmarks_model_path):
    out, log = tmp_path / "out", tmp_path / "log.txt"
    process = torchrun(["invert-dataset", str(dataset), "--out", str(out), *options(landmarks_model_path)], log)
    assert process.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    for name in [*GOOD, *BAD]:  # each image is finished by exactly one rank
        assert len([line for line in text.splitlines() if f" {name}" in line and "] " in line
                    and line.startswith("[rank ")]) == 1, text
    assert "[rank 0/2]" in text or "[rank 1/2]" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"images": 6, "done": 4, "skipped": 0, "failed": 2, "not_reached": 0}
    assert summary["time"]["devices"] == ["cpu", "cpu"]
    rows = read_csv(out)
    for name, reason in BAD.items():
        assert rows[name]["status"] == "failed" and rows[name]["reason"].startswith(reason)
    mine, theirs = results(out), results(single_run)
    assert sorted(mine) == sorted(theirs) == sorted(GOOD)
    for name in GOOD:  # the same seeds: the same pivots and metrics (up to the thread count's float rounding)
        assert mine[name]["seed"] == theirs[name]["seed"]
        np.testing.assert_allclose(mine[name]["pivot_array"], theirs[name]["pivot_array"], rtol=0, atol=1e-5)
        for row in ("pivot", "pti"):
            for key in METRIC_KEYS:
                a, b = mine[name]["metrics"][row][key], theirs[name]["metrics"][row][key]
                assert (a is None and b is None) or a == pytest.approx(b, rel=1e-4, abs=1e-6), (name, row, key)
    for row in ("pivot", "pti"):
        assert summary["metrics"][row]["lpips"]["mean"] == pytest.approx(float(np.mean(
            [mine[name]["metrics"][row]["lpips"] for name in GOOD])), rel=1e-12)


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_without_redoing_finished_images(dataset, tmp_path, landmarks_model_path):
    out, log = tmp_path / "out", tmp_path / "log.txt"
    argv = ["invert-dataset", str(dataset), "--out", str(out), *options(landmarks_model_path, steps=15)]
    text = stop_after_first_image(torchrun(argv, log), log, signal.SIGTERM)  # torchrun passes it on to both ranks
    assert text.count("stopped on request") == 2, text
    first = json.loads((out / "summary.json").read_text())["counts"]
    assert first["done"] >= 1 and first["not_reached"] >= 1, (first, text)  # stopped midway
    complete = assert_complete_or_absent(out)
    mtimes = {name: (image_folder(out, name) / "metrics.json").stat().st_mtime_ns for name in complete}

    process = torchrun(argv, tmp_path / "log2.txt")
    assert process.wait(timeout=300) == 0, (tmp_path / "log2.txt").read_text()
    rows = read_csv(out)
    assert {name for name, row in rows.items() if row["status"] == "skipped"} == set(complete)
    assert {name for name, row in rows.items() if row["status"] == "done"} == set(GOOD) - set(complete)
    assert {name: (image_folder(out, name) / "metrics.json").stat().st_mtime_ns for name in complete} == mtimes
    assert sorted(results(out)) == sorted(GOOD)
    assert json.loads((out / "summary.json").read_text())["counts"]["not_reached"] == 0


@pytest.mark.slow
def test_ctrl_c_stops_a_single_process_cleanly(dataset, tmp_path, landmarks_model_path):
    out, log = tmp_path / "out", tmp_path / "log.txt"
    argv = ["invert-dataset", str(dataset), "--out", str(out), *options(landmarks_model_path, steps=15)]
    process = torchrun(argv, log, ranks=None)
    text = stop_after_first_image(process, log, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT and "stopped on request" in text, text
    counts = json.loads((out / "summary.json").read_text())["counts"]
    assert counts["done"] >= 1 and counts["not_reached"] >= 1 and "Traceback" not in text, (counts, text)
    assert len(assert_complete_or_absent(out)) == counts["done"]
