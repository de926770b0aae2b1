"""bench/pti.py on the CPU: a tiny, short run writes every row for both paths with ratios (a smoke test, not timing)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pti.fast_path import APPROXIMATE_SETTINGS, FAST_SETTINGS, REFERENCE_SETTINGS, backend_state

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "pti.py"


@pytest.fixture(scope="module")
def bench():
    """bench/pti.py loaded as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("bench_pti", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    """One tiny --quick run on the CPU (1 timed step per row, a 2 + 2 step preset); (returned, JSON, markdown)."""
    out = tmp_path_factory.mktemp("bench")
    state_before = backend_state()
    returned = bench.main(["--device", "cpu", "--tiny", "--quick", "--steps", "1", "--preset-steps", "2", "2",
                           "--out", str(out / "pti.json"), "--markdown", str(out / "pti.md")])
    assert backend_state() == state_before
    return returned, json.loads((out / "pti.json").read_text()), (out / "pti.md").read_text()


def test_report_has_every_row_for_both_paths_with_ratios(bench, report):
    returned, written, _ = report
    assert written == json.loads(json.dumps(returned))
    assert set(written["paths"]) == {"reference", "fast"}
    assert written["paths"]["reference"]["settings"] == vars(REFERENCE_SETTINGS)
    assert written["paths"]["fast"]["settings"] == vars(FAST_SETTINGS)
    for path in written["paths"].values():
        assert set(path["rows"]) == set(bench.ROWS)
        for row in path["rows"].values():
            assert row["seconds"] > 0 and all(sample > 0 for sample in row["samples"])
            assert row["peak_gpu_memory_bytes"] is None  # CPU
        assert path["paper_preset_estimate_s"] > 0
    assert set(written["comparison"]) == set(bench.ROWS)
    for name, numbers in written["comparison"].items():
        reference = written["paths"]["reference"]["rows"][name]["seconds"]
        fast = written["paths"]["fast"]["rows"][name]["seconds"]
        assert numbers["ratio_fast_over_reference"] == pytest.approx(fast / reference)
        assert numbers["speedup"] == pytest.approx(reference / fast) and numbers["speedup"] > 0


def test_report_says_what_ran(report):
    _, written, _ = report
    preset = written["paths"]["fast"]["rows"]["paper_preset"]
    assert (preset["projection_steps"], preset["tuning_steps"]) == (2, 2)  # every step ran (early stop unreachable)
    assert preset["seconds"] == pytest.approx(preset["projection_s"] + preset["tuning_s"])
    assert any("SHORTENED to 2 + 2 steps" in note for note in written["notes"])
    assert written["targets"] is None  # issue 7's targets are judged on CUDA at 1024 px with the full preset only
    assert written["machine"]["device"] == "cpu" and written["generator"] == "tiny" and written["resolution"] == 32
    assert written["plan"]["timed_steps"] == 1 and written["quick"] is True
    assert len(written["paths"]["reference"]["rows"]["edit_render"]["samples"]) == written["plan"]["renders"]


def test_markdown_table_lists_every_row(bench, report):
    _, written, table = report
    assert "CPU run" in table and "SHORTENED" in table
    for row in bench.ROWS:
        label = bench.row_label(row, written)
        line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert f"{written['comparison'][row]['speedup']:.2f}x" in line


def test_ablation_variants_change_one_switch_each(bench):
    variants = bench.ablation_variants()
    for name, settings in variants.items():
        changed = [key for key, value in vars(settings).items() if value != getattr(FAST_SETTINGS, key)]
        assert len(changed) == 1 and changed[0] in name, (name, changed)
    changed_fields = {name.split(", ")[1].split("=")[0] for name in variants}
    differing = {key for key, value in vars(FAST_SETTINGS).items()
                 if value != getattr(REFERENCE_SETTINGS, key) or value != getattr(APPROXIMATE_SETTINGS, key)}
    assert changed_fields == differing | {"channels_last"}
    assert {"fp16_layers", "tuning_lpips_resolution"} <= changed_fields  # the approximate path's departures


def test_targets_are_checked_against_issue_7(bench):
    rows = {"paper_preset": {"seconds": 9.0, "peak_gpu_memory_bytes": 7e9},
            "edit_render": {"seconds": 0.025, "peak_gpu_memory_bytes": 1e9}}
    report = {"machine": {"device": "cuda:0"}, "resolution": 1024,
              "plan": {"projection_steps": 450, "tuning_steps": 350},
              "paths": {"fast": {"rows": rows}}, "comparison": {"paper_preset": {"speedup": 6.0}}}
    assert bench.target_check(report) == {"paper_preset_under_10_s": True, "paper_preset_at_least_5x": True,
                                          "edit_render_under_20_ms": False, "peak_memory_under_8_GB": True}
    assert bench.target_check({**report, "resolution": 512}) is None
    assert bench.target_check({**report, "plan": {"projection_steps": 18, "tuning_steps": 14}}) is None
