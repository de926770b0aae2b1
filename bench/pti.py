"""PTI speed: the plain reference path against the fast path, in the same run, on whatever device there is.

Times, through the real public functions (`project_w`, `pivotal_tune`, `TunedGenerator.render`):
- one projection step, one tuning step without and with the locality regulariser: short runs whose progress
  callback records a CUDA event (on the CPU: `time.perf_counter`) after every step; the median step-to-step
  interval after the warm-up steps is one step (setup excluded; the callback reads no losses, so adds no sync);
- the full `paper` preset, 450 projection + 350 tuning steps with the regulariser every step, setup included,
  no progress callback; early stop is kept but set unreachable so every step runs (its check every 10 steps
  still syncs, as in real use); `--quick` runs 1/25 of the steps and says so;
- one render of an edit (InterfaceGAN direction, random demo library) by the tuned generator at full resolution.
Peak GPU memory (`torch.cuda.max_memory_allocated`) per row on CUDA. The generator has random FFHQ-shaped weights
(z = w = 512, 8 mapping layers, channel_base 32768, channel_max 512, num_fp16_res 4, conv_clamp 256; below 512 px
channel_base 16384, as bench/generator.py and StyleGAN2-ADA's 256 px configuration), LPIPS random backbones (same
cost as the pretrained ones). `--tiny` is a small generator for a CPU smoke run. Writes JSON and a markdown table.

    python bench/pti.py [--device auto|cpu|cuda] [--resolution 1024] [--out FILE.json] [--markdown FILE.md]
                        [--quick] [--tiny] [--steps 20] [--preset-steps 450 350] [--ablate]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":  # `python bench/pti.py` puts bench/ first on sys.path, where this file shadows `pti`
    sys.path[:] = [str(_BENCH_DIR.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]

import argparse  # noqa: E402 - after the sys.path fix above
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402

from editing_directions.edit import Edit  # noqa: E402
from editing_directions.library import demo_library  # noqa: E402
from pti.config import PTIConfig, preset  # noqa: E402
from pti.fast_path import (  # noqa: E402
    APPROXIMATE_SETTINGS, FAST_SETTINGS, REFERENCE_SETTINGS, SpeedSettings, apply_to_config, backend_state,
    prepare_generator, speed_context)
from pti.losses import PerceptualLoss, build_lpips  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.projector import Pivot, project_w  # noqa: E402
from pti.tuning import TunedGenerator, pivotal_tune  # noqa: E402

ROWS = ("projection_step", "tuning_step", "tuning_step_regularized", "paper_preset", "edit_render")
QUICK_DIVISOR = 25  # --quick runs the paper preset with 1/25 of its steps (18 + 14)
WARMUP_STEPS = 3  # steps of each per-step run that are not timed (allocations, cuDNN autotuning)
UNREACHABLE_EARLY_STOP = 1e-12  # the early-stop check runs (and syncs) but never stops the run
EDIT = Edit("interfacegan", "age", 2.0)
ISSUE_TARGETS = {"paper_preset_s": 10.0, "speedup": 5.0, "edit_render_s": 0.020, "peak_memory_bytes": 8e9}


def ffhq_shape(resolution: int) -> dict:
    """Constructor arguments of an FFHQ-shaped StyleGAN2-ADA generator (channel_base 16384 below 512 px)."""
    channel_base = 32768 if resolution >= 512 else 16384
    return dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                mapping_kwargs={"num_layers": 8},
                synthesis_kwargs={"channel_base": channel_base, "channel_max": 512, "num_fp16_res": 4,
                                  "conv_clamp": 256})


def tiny_shape(resolution: int) -> dict:
    """Constructor arguments of a tiny generator for a CPU smoke run (the test fixture's shape)."""
    return dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=resolution, img_channels=3,
                mapping_kwargs={"num_layers": 2},
                synthesis_kwargs={"channel_base": 512, "channel_max": 32, "num_fp16_res": 2, "conv_clamp": 256})


class Stopwatch:
    """Seconds between `start` and `stop`: CUDA events on a CUDA device, `perf_counter` after a sync elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.begin: torch.cuda.Event | float | None = None

    def start(self) -> None:
        """Mark the start."""
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin = time.perf_counter()

    def stop(self) -> float:
        """Seconds since `start` (waits for the device)."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self.begin.elapsed_time(end) / 1000
        return time.perf_counter() - self.begin


class StepClock:
    """A progress callback that marks the end of every step (CUDA event, or `perf_counter`), without syncing."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def __call__(self, progress) -> None:
        """Mark the end of the step just reported."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_seconds(self, skip: int) -> list[float]:
        """Seconds of each step after the first `skip + 1` (the first mark ends step 1, so it starts no interval)."""
        if self.cuda:
            torch.cuda.synchronize()
            intervals = [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        else:
            intervals = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return intervals[skip:]


@dataclass(frozen=True)
class Plan:
    """What to run: steps of each per-step row, the preset's step counts, renders, which paths run the preset."""

    warmup_steps: int  # untimed steps at the start of each per-step run (allocations, caches, cuDNN autotuning)
    timed_steps: int  # timed steps of each per-step run
    projection_steps: int  # the paper preset's projection steps (450, or fewer with --quick / --preset-steps)
    tuning_steps: int  # the paper preset's tuning steps (350, or fewer)
    renders: int  # timed renders of the edit (after 3 untimed ones)
    preset_paths: tuple[str, ...] = ("reference", "fast")  # paths that run the whole preset (not the ablations)


class PeakMemory:
    """Peak GPU memory allocated between `reset` and `read` (None on the CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        """Start a new measurement."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> int | None:
        """Peak bytes since `reset`."""
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device))


def step_config(base: PTIConfig, steps: int, *, regularized: bool) -> PTIConfig:
    """`base` shortened to `steps` steps per phase, losses read only at the end, no previews, no early stop."""
    projection = dataclasses.replace(base.projection, num_steps=steps, report_every=steps, preview_every=0)
    locality = dataclasses.replace(base.tuning.locality, enabled=regularized, interval=1)
    tuning = dataclasses.replace(base.tuning, num_steps=steps, report_every=steps, preview_every=0,
                                 early_stop_lpips=None, locality=locality)
    return PTIConfig(projection=projection, tuning=tuning)


class PathRun:
    """One path under measurement: its settings, generator and paper configuration, and what it produced so far."""

    def __init__(self, settings: SpeedSettings, G: torch.nn.Module) -> None:
        self.settings = settings
        self.generator = prepare_generator(G, settings)
        self.paper = apply_to_config(preset("paper"), settings)
        self.rows: dict[str, dict] = {}
        self.pivot: Pivot | None = None  # from the projection row; the tuning rows start from it
        self.tuned: TunedGenerator | None = None  # from the regularised tuning row; the edit render uses it

    def report(self) -> dict:
        """Settings, rows and the paper preset estimated from the step medians."""
        estimate = (self.paper.projection.num_steps * self.rows["projection_step"]["seconds"]
                    + self.paper.tuning.num_steps * self.rows["tuning_step_regularized"]["seconds"])
        return {"settings": dataclasses.asdict(self.settings), "rows": self.rows, "paper_preset_estimate_s": estimate}


class Bench:
    """Runs every row on every path, row by row (the paths alternate, so a drifting load or clock hits all alike)."""

    def __init__(self, paths: dict[str, SpeedSettings], G: torch.nn.Module, target: torch.Tensor,
                 vgg: PerceptualLoss, alex: PerceptualLoss, plan: Plan, device: torch.device) -> None:
        self.runs = {name: PathRun(settings, G) for name, settings in paths.items()}
        self.target, self.vgg, self.alex, self.plan, self.device = target, vgg, alex, plan, device
        self.memory = PeakMemory(device)

    def run(self) -> dict[str, dict]:
        """All rows on all paths; {path: report}."""
        if self.device.type == "cuda":  # builds the CUDA plugin and autotunes before anything is timed
            self._each(self._warm_up)
        self._each(self._projection_step)
        self._each(lambda run: self._tuning_step(run, regularized=False))
        self._each(lambda run: self._tuning_step(run, regularized=True))
        self._each(self._paper_preset, only=self.plan.preset_paths)
        self._each(self._edit_render)
        return {name: run.report() for name, run in self.runs.items()}

    def _each(self, measure, only: tuple[str, ...] | None = None) -> None:
        for name, run in self.runs.items():
            if only is None or name in only:
                with speed_context(run.settings):
                    measure(run)

    def _warm_up(self, run: PathRun) -> None:
        config = step_config(run.paper, 2, regularized=True)
        pivot = project_w(run.generator, self.target, config.projection, device=self.device, lpips=self.vgg)
        pivotal_tune(run.generator, self.target, pivot, config.tuning, device=self.device, lpips=self.alex)

    def _steps(self) -> int:
        return self.plan.warmup_steps + self.plan.timed_steps + 1  # the first step's mark starts the first interval

    def _projection_step(self, run: PathRun) -> None:
        self.memory.reset()
        clock = StepClock(self.device)
        config = step_config(run.paper, self._steps(), regularized=False)
        run.pivot = project_w(run.generator, self.target, config.projection, device=self.device, lpips=self.vgg,
                              callback=clock)
        run.rows["projection_step"] = _summary(clock.step_seconds(self.plan.warmup_steps), self.memory.read())

    def _tuning_step(self, run: PathRun, *, regularized: bool) -> None:
        self.memory.reset()
        clock = StepClock(self.device)
        config = step_config(run.paper, self._steps(), regularized=regularized)
        tuned = pivotal_tune(run.generator, self.target, run.pivot, config.tuning, device=self.device,
                             lpips=self.alex, callback=clock)
        name = "tuning_step_regularized" if regularized else "tuning_step"
        run.rows[name] = _summary(clock.step_seconds(self.plan.warmup_steps), self.memory.read())
        if regularized:
            run.tuned = tuned

    def _paper_preset(self, run: PathRun) -> None:
        """The whole paper preset (projection then tuning), setup included, no callback; one timed run."""
        projection = dataclasses.replace(run.paper.projection, num_steps=self.plan.projection_steps)
        tuning = dataclasses.replace(run.paper.tuning, num_steps=self.plan.tuning_steps,
                                     early_stop_lpips=UNREACHABLE_EARLY_STOP)
        self.memory.reset()
        watch = Stopwatch(self.device)
        watch.start()
        pivot = project_w(run.generator, self.target, projection, device=self.device, lpips=self.vgg)
        projection_s = watch.stop()
        watch.start()
        tuned = pivotal_tune(run.generator, self.target, pivot, tuning, device=self.device, lpips=self.alex)
        tuning_s = watch.stop()
        if tuned.steps_run != self.plan.tuning_steps:
            raise RuntimeError(f"the preset stopped early ({tuned.steps_run} of {self.plan.tuning_steps} tuning steps)")
        run.rows["paper_preset"] = _summary([projection_s + tuning_s], self.memory.read(), projection_s=projection_s,
                                            tuning_s=tuning_s, projection_steps=self.plan.projection_steps,
                                            tuning_steps=tuned.steps_run)

    def _edit_render(self, run: PathRun) -> None:
        """One edited latent rendered by the tuned generator at full resolution: 3 untimed, then timed renders."""
        G = run.tuned.generator
        ws = demo_library(G.w_dim, G.num_ws).apply(EDIT, run.pivot.ws).to(self.device)
        watch = Stopwatch(self.device)
        for _ in range(3):
            run.tuned.render(ws, force_fp32=run.settings.force_fp32)
        self.memory.reset()
        samples = []
        for _ in range(self.plan.renders):
            watch.start()
            run.tuned.render(ws, force_fp32=run.settings.force_fp32)
            samples.append(watch.stop())
        run.rows["edit_render"] = _summary(samples, self.memory.read(), edit=EDIT.to_text())


def _summary(samples: list[float], peak: int | None, **extra) -> dict:
    """Median of the samples, with the samples and the peak memory."""
    return {"seconds": statistics.median(samples), "samples": samples, "peak_gpu_memory_bytes": peak, **extra}


def ablation_variants() -> dict[str, SpeedSettings]:
    """The fast path with one switch changed: set back to the reference path's, or to the approximate path's (one of
    the opt-in departures from the method), and with channels-last turned on."""
    variants = {}
    for field in dataclasses.fields(SpeedSettings):
        fast = getattr(FAST_SETTINGS, field.name)
        for other in (getattr(REFERENCE_SETTINGS, field.name), getattr(APPROXIMATE_SETTINGS, field.name)):
            if other != fast:
                variants[f"fast, {field.name}={other}"] = dataclasses.replace(FAST_SETTINGS, **{field.name: other})
    variants["fast, channels_last=True"] = dataclasses.replace(FAST_SETTINGS, channels_last=True)
    return variants


def machine_description(device: torch.device, load_before: tuple[float, ...]) -> dict:
    """What the numbers were measured on (with the load averages before and after the run)."""
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_before": load_before,
            "load_average_after": os.getloadavg()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_bytes=properties.total_memory, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def cuda_ops_status(device: torch.device) -> str:
    """Whether the fast path ran the fused CUDA ops (call after a fast-path run)."""
    if device.type != "cuda":
        return "not applicable (no CUDA device): the reference ops ran on both paths"
    from pti.ops.cuda_plugin import load_cuda_extension

    return "built and used" if load_cuda_extension() is not None else "FAILED to build: the fast path ran reference ops"


def compare(reference: dict, other: dict) -> dict:
    """Per row: both times, the ratio other/reference and the speed-up reference/other."""
    table = {}
    for row in ROWS:
        if row in reference["rows"] and row in other["rows"]:
            ref_s, other_s = reference["rows"][row]["seconds"], other["rows"][row]["seconds"]
            table[row] = {"reference_s": ref_s, "fast_s": other_s, "ratio_fast_over_reference": other_s / ref_s,
                          "speedup": ref_s / other_s}
    return table


def target_check(report: dict) -> dict | None:
    """Issue 7's targets against the fast path's numbers (CUDA at 1024 px, full run only)."""
    plan = report["plan"]
    full_run = (plan["projection_steps"], plan["tuning_steps"]) == (450, 350)
    if not report["machine"]["device"].startswith("cuda") or report["resolution"] != 1024 or not full_run:
        return None
    fast = report["paths"]["fast"]["rows"]
    peak = max(row["peak_gpu_memory_bytes"] for row in fast.values())
    comparison = report["comparison"]
    return {
        "paper_preset_under_10_s": fast["paper_preset"]["seconds"] < ISSUE_TARGETS["paper_preset_s"],
        "paper_preset_at_least_5x": comparison["paper_preset"]["speedup"] >= ISSUE_TARGETS["speedup"],
        "edit_render_under_20_ms": fast["edit_render"]["seconds"] < ISSUE_TARGETS["edit_render_s"],
        "peak_memory_under_8_GB": peak < ISSUE_TARGETS["peak_memory_bytes"],
    }


def row_label(row: str, report: dict) -> str:
    """Human-readable name of a row."""
    plan = report["plan"]
    preset_steps = f"{plan['projection_steps']} + {plan['tuning_steps']} steps"
    if (plan["projection_steps"], plan["tuning_steps"]) != (450, 350):
        preset_steps += " (SHORTENED; the paper: 450 + 350)"
    return {
        "projection_step": "projection step",
        "tuning_step": "tuning step, no regulariser",
        "tuning_step_regularized": "tuning step, regulariser (N_r = 1)",
        "paper_preset": f"paper preset, {preset_steps}",
        "edit_render": f"edit render, 1 image at {report['resolution']} px",
    }[row]


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _gigabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f} GB"


def markdown(report: dict) -> str:
    """The report as a markdown section: machine, table of both paths with ratios, targets, ablation."""
    machine = report["machine"]
    load = f"load average {machine['load_average_before'][0]:.1f} before, {machine['load_average_after'][0]:.1f} after"
    where = machine.get("gpu", f"CPU ({machine['cpu_count']} cores, {load})")
    lines = [
        f"PTI speed, reference path vs fast path: {where}, torch {machine['torch']}, "
        f"{report['generator']} generator at {report['resolution']} px, {report['date']}.",
        f"Fused CUDA ops: {report['cuda_ops']}.",
    ]
    if not machine["device"].startswith("cuda"):
        lines.append("CPU run: the fast path's switches are CUDA-only (but the tuning LPIPS size above 256 px), so the "
                     "ratios below measure load and noise, not the fast path.")
    lines += [
        "",
        "| row | reference | fast | fast / reference | speed-up | peak GPU memory (ref / fast) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    reference, fast = report["paths"]["reference"]["rows"], report["paths"]["fast"]["rows"]
    for row, numbers in report["comparison"].items():
        memory = " / ".join(_gigabytes(path[row]["peak_gpu_memory_bytes"]) for path in (reference, fast))
        lines.append(f"| {row_label(row, report)} | {_seconds(numbers['reference_s'])} | {_seconds(numbers['fast_s'])} "
                     f"| {numbers['ratio_fast_over_reference']:.3f} | {numbers['speedup']:.2f}x | {memory} |")
    estimates = {name: _seconds(path["paper_preset_estimate_s"]) for name, path in report["paths"].items()}
    lines += ["", f"Full paper preset (450 + 350 steps) estimated from the step medians: reference "
                  f"{estimates['reference']}, fast {estimates['fast']}."]
    if report["targets"] is not None:
        checks = ", ".join(f"{name}: {'yes' if met else 'NO'}" for name, met in report["targets"].items())
        lines += ["", f"Issue 7 targets: {checks}"]
    if report["ablation"]:
        lines += ["", "Ablation (fast path with one switch changed; speed-up over the reference path):", "",
                  "| variant | projection step | tuning step | tuning step, regulariser | edit render |",
                  "|---|---:|---:|---:|---:|"]
        for name, table in report["ablation"].items():
            cells = " | ".join(f"{table[row]['speedup']:.2f}x" for row in ROWS if row != "paper_preset")
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--resolution", type=int, default=None, help="output size (default 1024; 32 with --tiny)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default bench/results/pti_<device>.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--quick", action="store_true",
                        help=f"paper preset with 1/{QUICK_DIVISOR} of its steps, fewer warm-up/timed steps and renders")
    parser.add_argument("--tiny", action="store_true", help="tiny generator (CPU smoke run), not FFHQ-shaped")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per per-step row (default 20; 4 quick)")
    parser.add_argument("--preset-steps", type=int, nargs=2, metavar=("PROJECTION", "TUNING"), default=None,
                        help="steps of the preset run (default 450 350; with --quick 1/25 of that)")
    parser.add_argument("--ablate", action="store_true", help="also time the fast path with each switch changed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and target")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.preset_steps is not None and min(args.preset_steps) < 1:
        parser.error(f"--preset-steps must be at least 1 each, got {args.preset_steps}")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan the options ask for."""
    divisor = QUICK_DIVISOR if args.quick else 1
    projection_steps, tuning_steps = args.preset_steps or (450 // divisor, 350 // divisor)
    return Plan(warmup_steps=1 if args.quick else WARMUP_STEPS, timed_steps=args.steps or (4 if args.quick else 20),
                projection_steps=projection_steps, tuning_steps=tuning_steps, renders=5 if args.quick else 30)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write the JSON (and markdown) report; returns the report."""
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    resolution = args.resolution or (32 if args.tiny else 1024)
    plan = make_plan(args)

    torch.manual_seed(args.seed)
    init_kwargs = tiny_shape(resolution) if args.tiny else ffhq_shape(resolution)
    G = Generator(**init_kwargs).eval().requires_grad_(False).to(device)
    vgg = build_lpips("vgg", pretrained=False, device=device, seed=args.seed)
    alex = build_lpips("alex", pretrained=False, device=device, seed=args.seed)
    with torch.no_grad():
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(args.seed)).to(device)
        target = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const", force_fp32=True).clamp(-1, 1)

    paths = {"reference": REFERENCE_SETTINGS, "fast": FAST_SETTINGS, **(ablation_variants() if args.ablate else {})}
    state_before, load_before = backend_state(), os.getloadavg()
    results = Bench(paths, G, target, vgg, alex, plan, device).run()
    if backend_state() != state_before:
        raise RuntimeError(f"backend flags not restored: {state_before} -> {backend_state()}")

    preset_note = ("project_w + pivotal_tune, setup included, one run, no progress callback; early stop "
                   "unreachable so every step runs (its check every 10 steps still syncs)")
    if (plan.projection_steps, plan.tuning_steps) != (450, 350):
        preset_note += f"; SHORTENED to {plan.projection_steps} + {plan.tuning_steps} steps (--quick/--preset-steps)"
    report = {
        "benchmark": "bench/pti.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(device, load_before),
        "generator": "tiny" if args.tiny else "FFHQ-shaped (random weights)", "generator_kwargs": init_kwargs,
        "resolution": resolution, "quick": args.quick, "plan": dataclasses.asdict(plan),
        "cuda_ops": cuda_ops_status(device),
        "notes": [
            "per-step rows: median step-to-step interval of short runs of project_w / pivotal_tune (a progress "
            f"callback marks each step end), after {plan.warmup_steps} untimed step(s)",
            "paper preset: " + preset_note,
            "paths run row by row, alternating; LPIPS backbones random (no download), the same cost as pretrained",
        ],
        "paths": results,
        "comparison": compare(results["reference"], results["fast"]),
        "ablation": {name: compare(results["reference"], results[name]) for name in paths
                     if name not in ("reference", "fast")},
    }
    report["targets"] = target_check(report)

    out = args.out or _BENCH_DIR / "results" / f"pti_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    print(f"written to {out}" + (f" and {args.markdown}" if args.markdown else ""))
    return report


if __name__ == "__main__":
    main()
