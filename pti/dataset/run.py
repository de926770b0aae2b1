"""One rank's share of a dataset run: claim the next image, skip it when its folder is complete, else invert it and
write its files; a failing image is recorded with its reason; SIGINT/SIGTERM stop the run cleanly."""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from alignment import ImageInputError, load_image
from pti.dataset.outputs import METRICS_FILENAME, RECONSTRUCTION_FILENAME, atomic_folder, image_folder, read_complete
from pti.dataset.sources import DatasetImage
from pti.dataset.workers import Workers
from pti.progress import Cancelled, Progress
from pti.tuning import PIVOT_FILENAME, WEIGHTS_FILENAME

# What makes one image fail without stopping the run: bad or unreadable input and alignment errors (ValueError,
# OSError), out of memory on the GPU or the host.
IMAGE_FAILURES = (ValueError, OSError, MemoryError, torch.OutOfMemoryError)
STATUSES = ("done", "skipped", "failed")  # done: inverted in this run; skipped: complete from an earlier run
REFRESH_S = 1.0  # least seconds between two looks at the other ranks (progress bar, stop requests) during an image


@dataclass(frozen=True)
class RunOptions:
    """How a dataset run treats its images."""

    pivot: str = "w"  # "w" (the paper's W projection) or "e4e"
    aligned: bool = False  # images are FFHQ-aligned already (only resized to the generator's size)
    save_weights: bool = False  # also write each image's tuned generator (~120 MB at 1024 px)
    overwrite: bool = False  # redo images whose folder is complete
    seed: int = 0  # base seed; each image's seed also depends on its name (`image_seed`)


@dataclass(frozen=True)
class ImageRecord:
    """What happened to one image."""

    name: str  # the image's relative path in the dataset
    status: str  # one of STATUSES
    seconds: float | None  # wall time of its inversion (an earlier run's for a skipped image); None when failed
    reason: str | None = None  # why it failed
    metrics: dict = dataclasses.field(default_factory=dict)  # {"pivot": {metric: value}, "pti": {...}}


def image_seed(seed: int, name: str) -> int:
    """The seed of the image named `name`: the same whichever rank inverts it and whatever else the dataset holds."""
    return (seed + zlib.crc32(name.encode())) % 2**31


class GracefulStop:
    """Context manager: the first SIGINT/SIGTERM asks every rank to stop (the inversion in progress is cancelled at
    its next step, so its files are never written); a second one interrupts at once."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.signal: int | None = None  # the signal received here, if any
        self._previous: dict[int, object] = {}
        self._announced = False
        self._seen_remote = False
        self._last_check = 0.0

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python

    def _handle(self, signum: int, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def requested(self, *, throttle: bool = False) -> bool:
        """Whether this rank got a signal or another rank asked to stop (`throttle`: ask the others at most once
        every REFRESH_S seconds)."""
        if self.signal is not None:
            if not self._announced:
                self._announced = True
                self.workers.request_stop()
            return True
        now = time.monotonic()
        if not self._seen_remote and (not throttle or now - self._last_check >= REFRESH_S):
            self._last_check = now
            self._seen_remote = self.workers.stop_requested()
        return self._seen_remote


class RankProgress:
    """A tqdm bar of all ranks' progress on rank 0 (on a terminal), and one log line per image on every rank."""

    def __init__(self, workers: Workers, total: int) -> None:
        self.workers = workers
        self.total = total
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, unit="img", desc="invert-dataset", file=sys.stderr, dynamic_ncols=True,
                        disable=True if workers.rank != 0 else None)
        self._last_refresh = 0.0

    def refresh(self, finished: int | None = None) -> int:
        """Bring the bar to the ranks' count of finished images; returns it."""
        finished = self.workers.count_finished(0) if finished is None else finished
        if finished > self.bar.n:
            self.bar.update(finished - self.bar.n)
        self._last_refresh = time.monotonic()
        return finished

    def during_image(self) -> None:
        """Called on every optimisation step: refreshes the bar now and then."""
        if not self.bar.disable and time.monotonic() - self._last_refresh >= REFRESH_S:
            self.refresh()

    def image_finished(self, record: ImageRecord) -> None:
        """Count `record`'s image as finished and log one line about it."""
        finished = self.refresh(self.workers.count_finished(1))
        elapsed = time.perf_counter() - self.start
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = tqdm.format_interval((self.total - finished) / rate) if rate > 0 else "?"
        if record.status == "failed":
            what = f"failed {record.name}: {record.reason}"
        else:
            lpips = record.metrics["pti"]["lpips"]
            what = f"{record.status} {record.name} ({record.seconds:.1f} s, PTI LPIPS {lpips:.4f})"
        tqdm.write(f"[rank {self.workers.rank}/{self.workers.world_size}] {finished}/{self.total} {what} | all ranks "
                   f"{rate:.2f} img/s, ETA {eta}", file=sys.stderr)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def run_rank(pipeline, images: list[DatasetImage], out: Path, options: RunOptions, fingerprint: dict,
             workers: Workers, stop: GracefulStop) -> list[ImageRecord]:
    """Claim and process images until none is left or a stop is asked for; returns this rank's records.

    `fingerprint`: the settings that make results comparable (JSON values); a complete folder written with other
    settings is redone.
    """
    progress = RankProgress(workers, len(images))
    records = []

    def on_step(_: Progress) -> bool:
        progress.during_image()
        return stop.requested(throttle=True)

    try:
        while not stop.requested():
            index = workers.claim()
            if index >= len(images):
                break
            try:
                record = process_image(pipeline, images[index], out, options, fingerprint, on_step)
            except Cancelled:
                break
            records.append(record)
            progress.image_finished(record)
    finally:
        progress.close()
    return records


def aligned_image(image: DatasetImage) -> Image.Image:
    """An image given as FFHQ-aligned (--aligned): loaded, and refused unless square (resizing would distort it)."""
    picture = load_image(image.path)
    if picture.width != picture.height:
        raise ImageInputError(f"{image.name} is {picture.width}x{picture.height}, not square: --aligned takes square "
                              "FFHQ-aligned crops (leave --aligned out to align the photo)")
    return picture


def process_image(pipeline, image: DatasetImage, out: Path, options: RunOptions, fingerprint: dict,
                  callback: Callable[[Progress], object]) -> ImageRecord:
    """Skip `image` when its folder is complete (and made with these settings), else invert it and write its files.

    Raises `Cancelled` when the callback asks to stop; the image's files are then left as they were.
    """
    folder = image_folder(out, image.name)
    previous = None if options.overwrite else read_complete(folder)
    if previous is not None and previous.get("settings") == fingerprint:
        return ImageRecord(name=image.name, status="skipped", seconds=previous["seconds"],
                           metrics=previous["metrics"])
    seed = image_seed(options.seed, image.name)
    start = time.perf_counter()
    failure = None
    try:
        result = pipeline.invert(aligned_image(image) if options.aligned else image.path, callback=callback,
                                 seed=seed, pivot=options.pivot, align=not options.aligned)
    except IMAGE_FAILURES as error:
        failure = f"{type(error).__name__}: {error}"
    if failure is not None:  # outside the except block: the traceback, and the tensors it holds, are gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return ImageRecord(name=image.name, status="failed", seconds=None, reason=failure)
    seconds = time.perf_counter() - start
    identity = result.identities[0]
    metrics = {"pivot": dataclasses.asdict(identity.metrics_original), "pti": dataclasses.asdict(identity.metrics_tuned)}
    files = [PIVOT_FILENAME, RECONSTRUCTION_FILENAME, METRICS_FILENAME] + ([WEIGHTS_FILENAME] if options.save_weights
                                                                          else [])
    report = {
        "image": image.name,
        "source": str(image.path),
        "seed": seed,
        "seconds": seconds,
        "pivot": {"method": result.pivot_method, "steps": identity.pivot.steps_run, "seconds": result.projection_s},
        "tuning": {"steps": result.tuned.steps_run, "seconds": result.tuning_s},
        "metrics": metrics,
        "files": files,
        "settings": fingerprint,
    }
    with atomic_folder(folder) as temporary:
        if options.save_weights:
            result.tuned.save(temporary)  # tuned.safetensors and pivot.npy
        else:
            np.save(temporary / PIVOT_FILENAME, identity.pivot.w.numpy().astype(np.float32))
        identity.pivot_tuned.save(temporary / RECONSTRUCTION_FILENAME)
        (temporary / METRICS_FILENAME).write_text(json.dumps(report, indent=2))
    return ImageRecord(name=image.name, status="done", seconds=seconds, metrics=metrics)
