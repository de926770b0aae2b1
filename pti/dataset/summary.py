"""The summary of a dataset run: a per-image CSV and a Table-1-style report (JSON and markdown) on rank 0."""
from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import platform
import statistics
from pathlib import Path

import torch

from pti.dataset.outputs import CSV_FILENAME, SUMMARY_JSON_FILENAME, SUMMARY_MARKDOWN_FILENAME, write_text_atomically
from pti.dataset.run import ImageRecord
from pti.metrics import METRIC_NOTES

METRICS = (("mse", "MSE"), ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"), ("identity_similarity", "ID sim"),
           ("identity_distance", "ID dist"))
ROWS = ("pivot", "pti")  # the pivot rendered by the original generator; PTI (the tuned generator)
PIVOT_TITLES = {"w": "W projection alone", "e4e": "e4e alone"}
PACKAGES = ("torch", "torchvision", "numpy", "pillow", "lpips", "dlib-bin", "scipy", "tqdm")
NOT_REACHED = "not_reached"  # CSV status of an image no rank got to (the run was stopped)


def package_versions() -> dict[str, str | None]:
    """Versions of Python, the packages behind the numbers, and torch's CUDA (None: not installed / CPU build)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda
    return versions


def _stats(values: list[float | None]) -> dict:
    """Mean, sample standard deviation (n - 1; None below two values) and count of the values that are present."""
    present = [value for value in values if value is not None]
    return {"mean": statistics.fmean(present) if present else None,
            "std": statistics.stdev(present) if len(present) > 1 else None,
            "n": len(present)}


def summarize(records: list[ImageRecord], *, num_images: int, settings: dict, wall_s: float,
              devices: list[str]) -> dict:
    """The report of a run over `num_images` images from every rank's records (`devices`: each rank's)."""
    complete = [r for r in records if r.status in ("done", "skipped")]
    counts = {status: sum(r.status == status for r in records) for status in ("done", "skipped", "failed")}
    return {
        "counts": {"images": num_images, **counts, NOT_REACHED: num_images - len(records)},
        "metrics": {row: {key: _stats([r.metrics[row][key] for r in complete]) for key, _ in METRICS}
                    for row in ROWS},
        "time": {"wall_s": wall_s, "ranks": len(devices), "devices": devices,
                 "per_image_s": _stats([r.seconds for r in complete]),
                 "inverted_in_this_run_s": sum(r.seconds for r in records if r.status == "done")},
        "failed": [{"image": r.name, "reason": r.reason} for r in sorted(records, key=lambda r: r.name)
                   if r.status == "failed"],
        "settings": settings,
        "versions": package_versions(),
        "metric_notes": METRIC_NOTES,
        "notes": {"std": "sample standard deviation (n - 1) over the complete images (done and skipped)",
                  "per_image_s": "wall time of one image's inversion (alignment, pivot, tuning, metrics), on its "
                                 "rank's device; a skipped image counts with its earlier run's time",
                  "pivot": "the pivot rendered by the original generator; pti: by the tuned generator"},
    }


def per_image_csv(records: list[ImageRecord], names: list[str]) -> str:
    """One CSV row per image of the dataset (`names`): name, status, reason, seconds, every metric of both rows."""
    by_name = {r.name: r for r in records}
    columns = ["image", "status", "reason", "seconds"] + [f"{row}_{key}" for row in ROWS for key, _ in METRICS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for name in sorted(names):
        record = by_name.get(name)
        if record is None:
            writer.writerow([name, NOT_REACHED, "", ""] + [""] * (len(columns) - 4))
            continue
        values = [record.metrics[row][key] if record.metrics else None for row in ROWS for key, _ in METRICS]
        writer.writerow([name, record.status, record.reason or "", _csv_number(record.seconds)]
                        + [_csv_number(v) for v in values])
    return buffer.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(value)  # repr: the float exactly as in the per-image JSON


def _mean_std(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.4f}" + (f" ± {stats['std']:.4f}" if stats["std"] is not None else "")


def format_markdown(summary: dict) -> str:
    """The report as markdown: the Table-1 metrics (mean ± std), the counts, times, settings and versions."""
    settings, counts, time_ = summary["settings"], summary["counts"], summary["time"]
    lines = ["# PTI on a dataset: reconstruction metrics (Table 1 of the PTI paper)", "",
             "| | " + " | ".join(title for _, title in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    titles = {"pivot": PIVOT_TITLES.get(settings.get("pivot"), "pivot alone"), "pti": "PTI"}
    for row in ROWS:
        cells = [_mean_std(summary["metrics"][row][key]) for key, _ in METRICS]
        lines.append(f"| {titles[row]} | " + " | ".join(cells) + " |")
    per_image = time_["per_image_s"]
    lines += [
        "",
        "Mean ± sample standard deviation over the complete images. MSE: pixels in [-1, 1]; LPIPS: AlexNet; "
        "MSE, LPIPS, ID dist: lower is better; MS-SSIM, ID sim: higher is better. ID sim / ID dist: dlib's "
        "face-recognition descriptors, not the paper's network (blank when unavailable).",
        "",
        f"Images: {counts['images']}: {counts['done']} inverted in this run, {counts['skipped']} complete from an "
        f"earlier run, {counts['failed']} failed, {counts[NOT_REACHED]} not reached.",
        f"Time: {time_['wall_s']:.1f} s wall on {time_['ranks']} rank(s) ({', '.join(time_['devices'])}); per image "
        f"{_mean_std(per_image)} s.",
        "",
        "Settings: " + ", ".join(f"{key} {json.dumps(settings[key])}" for key in settings if key != "config"),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in summary["versions"].items()),
    ]
    if summary["failed"]:
        lines += ["", "Failed:"] + [f"- `{entry['image']}`: {entry['reason']}" for entry in summary["failed"]]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, summary: dict, records: list[ImageRecord], names: list[str]) -> None:
    """Write images.csv, summary.json and summary.md into `out` (each atomically)."""
    write_text_atomically(out / CSV_FILENAME, per_image_csv(records, names))
    write_text_atomically(out / SUMMARY_JSON_FILENAME, json.dumps(summary, indent=2))
    write_text_atomically(out / SUMMARY_MARKDOWN_FILENAME, format_markdown(summary))


def read_summary(out: Path) -> dict:
    """The summary.json of a dataset run's output folder; FileNotFoundError / ValueError when absent or unreadable."""
    path = out / SUMMARY_JSON_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} the --out folder of `python -m pti invert-dataset`?")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not a valid summary ({error})") from None
