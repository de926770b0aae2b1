"""Multi-ID tuning: the official per-identity schedule against the batched one, time and per-identity reconstruction.

Tunes one tiny 32 px generator (`load_generator("tiny")`) for N identities with each
`TuningConfig.multi_id_schedule` ("per_identity": num_steps x N updates on one identity each; "batched": num_steps
updates on the mean loss), paper settings otherwise (350 steps, lr 3e-4, regulariser on every update) but without
the early stop (random LPIPS backbones, as in the tests, give distances far below its 0.06, so it would stop
at once). Targets are renders of a perturbed copy of the generator (no W of it reproduces them exactly), pivots
the original's W codes of the same z. Reports wall seconds (median of `--repeats` runs, schedules in turns, the
ratio to "batched" in the same run) and each identity's MSE (images in [-1, 1]) and LPIPS before and after.
Writes bench/results/multi_id.json.

    python bench/multi_id.py [--identities 3] [--steps 350] [--repeats 3] [--threads N]

The tiny model's numbers say nothing about quality at 1024 px.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":  # `python bench/multi_id.py` puts bench/ first on sys.path, where pti.py shadows `pti`
    sys.path[:] = [str(_BENCH_DIR.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]
sys.path.append(str(_BENCH_DIR.parent / "tests"))  # tests/targets.py: the tests' targets for the tiny generator

import argparse  # noqa: E402 - after the sys.path fix above
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from pti.config import TuningConfig  # noqa: E402
from pti.losses import build_lpips, l2_per_image  # noqa: E402
from pti.projector import Pivot  # noqa: E402
from pti.tuning import pivotal_tune  # noqa: E402
from pti.weights import load_generator  # noqa: E402
from targets import out_of_domain_targets  # noqa: E402

SCHEDULES = ("per_identity", "batched")


@torch.no_grad()
def identities(G: torch.nn.Module, count: int) -> tuple[torch.Tensor, list[Pivot]]:
    """The tests' out-of-domain targets and, as pivots, `G`'s W codes of the same z."""
    targets, z = out_of_domain_targets(G, count)
    return targets, [Pivot(w=w, num_ws=G.num_ws) for w in G.mapping(z, None)[:, 0].split(1)]


def main(argv: list[str] | None = None) -> dict:
    """Measure, print the table, write the JSON file; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=3, help="number of identities tuned together")
    parser.add_argument("--steps", type=int, default=350, help="TuningConfig.num_steps (epochs for per_identity)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each schedule, in turns")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=_BENCH_DIR / "results" / "multi_id.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    G = load_generator("tiny")
    alex = build_lpips("alex", pretrained=False)
    targets, pivots = identities(G, args.identities)
    ws = torch.cat([p.ws for p in pivots])

    def reconstruction(images: torch.Tensor) -> dict[str, list[float]]:
        with torch.no_grad():
            return {"mse": l2_per_image(images, targets).tolist(), "lpips": alex(images, targets).tolist()}

    with torch.no_grad():
        before = reconstruction(G.synthesis(ws, noise_mode="const", force_fp32=True))
    seconds = {name: [] for name in SCHEDULES}
    rows = {}
    for _ in range(args.repeats):
        for name in SCHEDULES:
            config = TuningConfig(num_steps=args.steps, early_stop_lpips=None, preview_every=0,
                                  multi_id_schedule=name)
            start = time.perf_counter()
            tuned = pivotal_tune(G, targets, pivots, config, lpips=alex)
            seconds[name].append(time.perf_counter() - start)
            rows[name] = {"updates": tuned.steps_run, **reconstruction(tuned.render(ws))}
    baseline = statistics.median(seconds["batched"])
    for name in SCHEDULES:
        rows[name]["seconds"] = statistics.median(seconds[name])
        rows[name]["seconds_each_run"] = seconds[name]
        rows[name]["ratio_to_batched"] = rows[name]["seconds"] / baseline

    report = {
        "identities": args.identities, "steps": args.steps, "before": before, "schedules": rows,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "torch": torch.__version__, "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{args.identities} identities, num_steps {args.steps}; MSE / LPIPS per identity")
    print(f"{'before tuning':14} {'':>8} {'':>9} {'':>7}  " + "  ".join(
        f"{m:.4f}/{p:.4f}" for m, p in zip(before["mse"], before["lpips"])))
    for name, row in rows.items():
        print(f"{name:14} {row['updates']:5d} up {row['seconds']:7.2f} s {row['ratio_to_batched']:5.2f}x  " + "  ".join(
            f"{m:.4f}/{p:.4f}" for m, p in zip(row["mse"], row["lpips"])))
    print(f"load average before/after: {load_before} / {os.getloadavg()}; threads {torch.get_num_threads()}")
    print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
