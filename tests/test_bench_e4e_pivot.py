"""bench/e4e_pivot.py times through bench/generator.py's helper, which it loads as a module (a smoke test)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "e4e_pivot.py"


def test_timed_runs_through_the_generator_benchmark_helper():
    spec = importlib.util.spec_from_file_location("bench_e4e_pivot", BENCH_FILE)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls = []
    median, runs = bench.timed(lambda: calls.append(1), torch.device("cpu"), repeats=3)
    assert len(calls) == 4 and len(runs) == 3  # one warm-up call, three timed
    assert median in runs and all(run >= 0 for run in runs)
