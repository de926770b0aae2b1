"""Benchmark of the StyleGAN2 generator (pti.networks) in the FFHQ configuration, random weights, batch 1.

Times, per resolution: a forward pass (eval, no grad), a forward+backward to the W+ code only (what the
W projection does) and a forward+backward to the code and every generator weight (what pivotal tuning does).
Warm-up runs first, then the variants timed in turns (one run of each per round), and the median of each one's
runs. Optionally the same with `torch.compile`.
The baseline, timed in the same run, is the reference implementation's op sequence over the same weights
(bench/reference_style.py); the table gives the speed-up against it and against the reference's numbers in
issue #2 (measured elsewhere), and the JSON has every run.

    python bench/generator.py                       # 256 and 1024 on the CPU, eager
    python bench/generator.py --compile --out bench/results/generator_compile.json

The C allocator is set as the app and the CLI set it (`pti.cpu_allocator.keep_freed_memory`);
`--default-allocator` leaves it alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# bench/ itself after the repository (where bench/pti.py cannot shadow `pti`), also when another script loads this one
sys.path.append(str(Path(__file__).resolve().parent))
from pti.cpu_allocator import keep_freed_memory  # noqa: E402
from pti.networks import Generator  # noqa: E402
from reference_style import reference_style_copy, reference_style_synthesis  # noqa: E402

MODES = ("forward", "forward_backward_ws", "forward_backward_all")
# The reference StyleGAN2-ADA implementation, eval mode, batch 1, on a quiet 2-core CPU of this project's dev
# machines (numbers from issue #2: 1024 px forward ~2.2 s, forward+backward 6.5-7.5 s; 256 px 0.14 s / 0.44 s).
REFERENCE_CPU_SECONDS = {
    (256, "forward"): 0.14, (256, "forward_backward_all"): 0.44,
    (1024, "forward"): 2.2, (1024, "forward_backward_all"): 7.0,
}


@dataclass(frozen=True)
class Timing:
    """Timings of one (resolution, mode, variant)."""

    resolution: int  # output resolution
    channel_base: int  # channel_base of the configuration
    mode: str  # one of MODES
    variant: str  # 'eager', 'compiled' or 'reference-style' (the baseline)
    median_s: float  # median wall time of the timed runs
    min_s: float  # fastest timed run
    runs_s: list[float]  # every timed run
    first_call_s: float  # the first (warm-up) call, which includes compilation for 'compiled'


def ffhq_generator(resolution: int, channel_base: int, device: torch.device) -> Generator:
    """The FFHQ StyleGAN2 configuration at `resolution` with random weights and non-zero noise strengths."""
    generator = Generator(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": channel_base, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
    )
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.1)
    return generator.eval().to(device)


def step_function(weights_of: torch.nn.Module, synthesis, ws: torch.Tensor, mode: str):
    """A callable running one benchmark step of `mode` through `synthesis`, whose weights are those of `weights_of`."""

    def forward():
        with torch.no_grad():
            return synthesis(ws, noise_mode="const")

    def forward_backward(weights: bool):
        weights_of.requires_grad_(weights)
        weights_of.zero_grad(set_to_none=True)
        w = ws.detach().clone().requires_grad_(True)
        synthesis(w, noise_mode="const").square().mean().backward()
        return w.grad

    if mode == "forward":
        return forward
    return lambda: forward_backward(weights=(mode == "forward_backward_all"))


def time_steps(steps: dict[str, Callable[[], object]], device: torch.device, warmup: int,
               repeats: int) -> dict[str, tuple[float, list[float]]]:
    """Warm each of `steps` (name -> callable) up, then time them in turns, one run of each per round, so a slow
    spell of the machine lands on every variant alike; return each one's first call and its timed runs."""

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    firsts = {}
    for name, step in steps.items():
        firsts[name] = timed(step)
        for _ in range(warmup - 1):
            timed(step)
    runs: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            runs[name].append(timed(step))
    return {name: (firsts[name], runs[name]) for name in steps}


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (other processes compete for the CPU when these are high)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (the first compiles)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(G.synthesis)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="time the reference-style baseline in the same run (default: yes)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (the app and the CLI keep freed memory for reuse)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generator.json")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    allocator = "default" if args.default_allocator or not keep_freed_memory() else "keeps freed memory"
    device = torch.device(args.device)
    load_before = load_average()
    timings: list[Timing] = []
    print(f"load average before: {load_before}; allocator: {allocator}", flush=True)
    for resolution in args.resolutions:
        channel_base = 32768 if resolution >= 512 else 16384
        torch.manual_seed(0)
        generator = ffhq_generator(resolution, channel_base, device)
        ws = generator.mapping(torch.randn([1, 512], device=device), None).detach()
        variants = {"eager": (generator.synthesis, generator.synthesis)}
        if args.compile:
            variants["compiled"] = (generator.synthesis, torch.compile(generator.synthesis))
        if args.baseline:
            baseline = reference_style_copy(generator.synthesis)
            variants["reference-style"] = (baseline, lambda ws, noise_mode, b=baseline: reference_style_synthesis(
                b, ws, noise_mode=noise_mode))
        for mode in args.modes:
            steps = {variant: step_function(weights_of, synthesis, ws, mode)
                     for variant, (weights_of, synthesis) in variants.items()}
            for variant, (first, runs) in time_steps(steps, device, args.warmup, args.repeats).items():
                timing = Timing(resolution, channel_base, mode, variant, statistics.median(runs), min(runs), runs,
                                first)
                timings.append(timing)
                print(f"{resolution:5d} {variant:15s} {mode:22s} median {timing.median_s:7.3f} s  "
                      f"min {timing.min_s:7.3f} s  first {first:7.2f} s", flush=True)
    load_after = load_average()
    print_table(timings, device)
    print(f"load average before: {load_before}, after: {load_after}")
    report = {"machine": machine_info(device), "allocator": allocator, "load_average_before": load_before,
              "load_average_after": load_after, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "timings": [asdict(t) for t in timings]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def print_table(timings: list[Timing], device: torch.device) -> None:
    """Print the medians, with the speed-up against the same-run baseline and against the reference's numbers."""
    baseline = {(t.resolution, t.mode): t.median_s for t in timings if t.variant == "reference-style"}
    print(f"\n{'res':>5} {'variant':15} {'mode':22} {'median s':>9} {'vs baseline':>12} {'issue s':>8} "
          f"{'vs issue':>9}")
    for t in timings:
        same_run = baseline.get((t.resolution, t.mode)) if t.variant != "reference-style" else None
        issue = REFERENCE_CPU_SECONDS.get((t.resolution, t.mode)) if device.type == "cpu" else None
        same_run_text = f"{same_run / t.median_s:11.2f}x" if same_run else f"{'':12}"
        issue_text = f"{issue:8.2f} {issue / t.median_s:8.2f}x" if issue else f"{'':8} {'':9}"
        print(f"{t.resolution:5d} {t.variant:15} {t.mode:22} {t.median_s:9.3f} {same_run_text} {issue_text}")


if __name__ == "__main__":
    main()
