"""bench/multi_id.py on the CPU: 2 steps over 2 identities write both schedules' rows (a smoke test, not timing)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "multi_id.py"


def test_both_schedules_with_their_updates_and_per_identity_metrics(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_multi_id", BENCH_FILE)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    returned = bench.main(["--identities", "2", "--steps", "2", "--repeats", "1", "--out", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text())["schedules"] == returned["schedules"]
    rows = returned["schedules"]
    assert rows["per_identity"]["updates"] == 4 and rows["batched"]["updates"] == 2
    assert rows["batched"]["ratio_to_batched"] == 1.0
    for row in (returned["before"], *rows.values()):
        assert len(row["mse"]) == len(row["lpips"]) == 2
