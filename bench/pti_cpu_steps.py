"""Seconds per PTI step on the CPU at 1024 px, random FFHQ-shaped weights (the real code paths, short runs).

Times one projection step, one tuning step without and with the locality regulariser (median of the step-to-step
intervals of short runs, so setup is excluded), and as the baseline one synthesis forward+backward at 1024 px;
wall and process CPU seconds (CPU time is less sensitive to other load on a shared machine).
LPIPS backbones are random (same cost as pretrained). Writes bench/results/pti_cpu_steps.json.

    python bench/pti_cpu_steps.py [--steps 4] [--threads N] [--default-allocator]

The C allocator is set as the app and the CLI set it (`pti.cpu_allocator.keep_freed_memory`) unless
`--default-allocator` is given.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":  # `python bench/pti_cpu_steps.py` puts bench/ first on sys.path, where pti.py shadows `pti`
    sys.path[:] = [str(_BENCH_DIR.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]

import argparse  # noqa: E402 - after the sys.path fix above
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from pti.config import ProjectionConfig, preset  # noqa: E402
from pti.cpu_allocator import keep_freed_memory  # noqa: E402
from pti.losses import build_lpips  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.projector import project_w  # noqa: E402
from pti.tuning import pivotal_tune  # noqa: E402

FFHQ_SHAPE = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs={"num_layers": 8},
                  synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256})


def step_seconds(run) -> tuple[float, float]:
    """Median (wall, process CPU) seconds between consecutive progress reports of `run(callback)`."""
    marks = []
    run(lambda progress: marks.append((progress.elapsed_s, time.process_time())))
    wall = statistics.median(b[0] - a[0] for a, b in zip(marks, marks[1:]))
    cpu = statistics.median(b[1] - a[1] for a, b in zip(marks, marks[1:]))
    return wall, cpu


def main() -> None:
    """Measure and print the table; write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed run (median of steps-1 intervals)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (the app and the CLI keep freed memory for reuse)")
    parser.add_argument("--out", type=Path, default=_BENCH_DIR / "results" / "pti_cpu_steps.json")
    args = parser.parse_args()
    allocator = "default" if args.default_allocator or not keep_freed_memory() else "keeps freed memory"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    G = Generator(**FFHQ_SHAPE).eval().requires_grad_(False)
    vgg, alex = build_lpips("vgg", pretrained=False), build_lpips("alex", pretrained=False)
    with torch.no_grad():
        target = G.synthesis(G.mapping(torch.randn(1, 512), None), noise_mode="const", force_fp32=True).clamp(-1, 1)

    ws = G.mapping(torch.randn(1, 512), None).requires_grad_(True)
    baseline = []
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        G.synthesis(ws, noise_mode="const", force_fp32=True).square().mean().backward()
        baseline.append((time.perf_counter() - start, time.process_time() - start_cpu))
    baseline_s = statistics.median(wall for wall, _ in baseline[1:])
    baseline_cpu_s = statistics.median(cpu for _, cpu in baseline[1:])

    projection = ProjectionConfig(num_steps=args.steps, preview_every=0)
    pivot = project_w(G, target, ProjectionConfig(num_steps=1, w_avg_samples=100), lpips=vgg)
    results = {"synthesis_forward_backward": (baseline_s, baseline_cpu_s),
               "projection_step": step_seconds(lambda cb: project_w(G, target, projection, lpips=vgg, callback=cb))}
    for name, locality in (("tuning_step_no_regularizer", False), ("tuning_step_regularizer", True)):
        tuning = preset("paper", tuning={"num_steps": args.steps, "early_stop_lpips": None, "preview_every": 0},
                        locality={"enabled": locality}).tuning
        results[name] = step_seconds(lambda cb: pivotal_tune(G, target, pivot, tuning, lpips=alex, callback=cb))

    report = {
        "wall_seconds": {k: wall for k, (wall, _) in results.items()},
        "process_cpu_seconds": {k: cpu for k, (_, cpu) in results.items()},
        "wall_ratio_to_baseline": {k: wall / baseline_s for k, (wall, _) in results.items()},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "torch": torch.__version__, "platform": platform.platform()},
        "steps_per_run": args.steps,
        "allocator": allocator,
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for name, (wall, cpu) in results.items():
        print(f"{name:30} {wall:8.2f} s wall {cpu:8.2f} s CPU  ({wall / baseline_s:4.2f}x baseline)")
    print(f"load average before/after: {load_before} / {os.getloadavg()}; threads {torch.get_num_threads()}; "
          f"allocator: {allocator}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
