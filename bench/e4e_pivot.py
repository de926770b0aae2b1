"""Time saved by the e4e pivot: one encoder pass against the W projection, FFHQ 1024 px configuration, random weights.

e4e pivot: the released e4e architecture (IR-SE-50, 18 styles of 512) on the 256 px input of an aligned face
(including the release's resize and normalisation), then the 1024 px render of the pivot by the generator (what the
pipeline shows and measures). W projection: a few steps of the real projector (LPIPS-VGG with random backbone
weights, same cost as pretrained); the configured step count (450 by default) is EXTRAPOLATED from the median step
plus the measured setup (W statistics), not run. Writes bench/results/e4e_pivot.json.

    python bench/e4e_pivot.py [--device cpu|cuda] [--steps 3] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":  # `python bench/e4e_pivot.py` puts bench/ first on sys.path, where pti.py shadows `pti`
    sys.path[:] = [str(_BENCH_DIR.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]

import argparse  # noqa: E402 - after the sys.path fix above
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

from pti.config import ProjectionConfig  # noqa: E402
from pti.cpu_allocator import keep_freed_memory  # noqa: E402
from pti.e4e import E4E  # noqa: E402
from pti.e4e_network import Encoder4Editing  # noqa: E402
from pti.images import tensor_to_pil  # noqa: E402
from pti.losses import build_lpips  # noqa: E402
from pti.projector import project_w  # noqa: E402

RESOLUTION = 1024
CHANNEL_BASE = 32768  # the FFHQ 1024 px configuration


@functools.lru_cache(maxsize=1)
def generator_benchmark():
    """bench/generator.py as a module (the generator benchmark: the FFHQ generator and its timing helper)."""
    spec = importlib.util.spec_from_file_location("bench_generator", _BENCH_DIR / "generator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(run: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, list[float]]:
    """(median, every run) wall seconds of `run()` after one warm-up call, synchronising CUDA around each run."""
    _, runs = generator_benchmark().time_steps({"run": run}, device, warmup=1, repeats=repeats)["run"]
    return statistics.median(runs), runs


def main() -> None:
    """Measure, print the comparison and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="projection steps timed (median step; default 3)")
    parser.add_argument("--projection-steps", type=int, default=ProjectionConfig().num_steps,
                        help="configured projection steps to extrapolate to (default: %(default)s, the paper's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed e4e passes and renders (after a warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=_BENCH_DIR / "results" / "e4e_pivot.json")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the median step is taken between progress reports)")
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "keeps freed memory" if keep_freed_memory() else "default"  # as in the app and the CLI
    device = torch.device(args.device)
    torch.manual_seed(0)
    load_before = os.getloadavg()

    G = generator_benchmark().ffhq_generator(RESOLUTION, CHANNEL_BASE, device).requires_grad_(False)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, device=device), None)
        target = G.synthesis(ws, noise_mode="const", force_fp32=True).clamp(-1, 1)
    face = tensor_to_pil(target)[0]  # a 1024 px "aligned face"

    encoder = Encoder4Editing(G.num_ws).eval().requires_grad_(False)  # the released layout: 18 x 512
    e4e = E4E(encoder=encoder, latent_avg=G.mapping.w_avg.detach().cpu().reshape(1, -1).repeat(G.num_ws, 1))
    e4e.to(device)
    pivot = e4e.invert(face)
    encode_s, encode_runs = timed(lambda: e4e.invert(face), device, args.repeats)

    def render() -> None:
        with torch.no_grad():
            G.synthesis(pivot, noise_mode="const", force_fp32=True)

    render_s, render_runs = timed(render, device, args.repeats)
    e4e_total_s = encode_s + render_s

    vgg = build_lpips("vgg", pretrained=False, device=device)
    marks = []
    config = ProjectionConfig(num_steps=args.steps, preview_every=0, report_every=1)
    start = time.perf_counter()
    project_w(G, target, config, device=device, lpips=vgg, callback=lambda progress: marks.append(progress.elapsed_s))
    projection_total_s = time.perf_counter() - start
    step_s = statistics.median(b - a for a, b in zip(marks, marks[1:]))
    setup_s = max(0.0, projection_total_s - args.steps * step_s)
    projected_s = setup_s + args.projection_steps * step_s

    report = {
        "device": str(device),
        "e4e": {"encoder_pass_s": encode_s, "encoder_runs_s": encode_runs, "render_1024_s": render_s,
                "render_runs_s": render_runs, "pivot_total_s": e4e_total_s},
        "w_projection": {"steps_timed": args.steps, "median_step_s": step_s, "setup_s": setup_s,
                         "measured_total_s": projection_total_s, "configured_steps": args.projection_steps,
                         "configured_total_s_extrapolated": projected_s},
        "ratio_projection_to_e4e": projected_s / e4e_total_s,
        "note": (f"the {args.projection_steps}-step projection time is extrapolated: setup + "
                 f"{args.projection_steps} x the median of {args.steps - 1} measured step intervals"),
        "allocator": allocator,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "torch": torch.__version__, "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"device {device}, {torch.get_num_threads()} threads; random weights, FFHQ {RESOLUTION} px configuration")
    print(f"e4e pivot: encoder pass {encode_s:.2f} s + {RESOLUTION} px render {render_s:.2f} s = {e4e_total_s:.2f} s")
    print(f"W projection: median step {step_s:.2f} s (of {args.steps} timed steps), setup {setup_s:.2f} s")
    print(f"W projection, {args.projection_steps} steps: {projected_s:.0f} s = {projected_s / 60:.1f} min "
          f"(EXTRAPOLATED from the median step, not run)")
    print(f"the e4e pivot is {projected_s / e4e_total_s:.0f}x faster than the {args.projection_steps}-step projection")
    print(f"load average before/after: {load_before} / {os.getloadavg()}; written to {args.out}")


if __name__ == "__main__":
    main()
