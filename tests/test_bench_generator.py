"""bench/generator.py runs as a script and times the same-run baseline beside our generator (a smoke run, no timing)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "generator.py"


def test_smoke_run_writes_every_variant_and_mode(tmp_path):
    out = tmp_path / "generator.json"
    result = subprocess.run([sys.executable, str(BENCH_FILE), "--resolutions", "16", "--warmup", "1", "--repeats", "1",
                             "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {(t["variant"], t["mode"]) for t in report["timings"]}
    assert rows == {(variant, mode) for variant in ("eager", "reference-style")
                    for mode in ("forward", "forward_backward_ws", "forward_backward_all")}
    assert report["allocator"] == "keeps freed memory"
    eager_rows = [line.split() for line in result.stdout[result.stdout.index("vs baseline"):].splitlines()
                  if line.split()[1:2] == ["eager"]]
    assert len(eager_rows) == 3 and all(row[4].endswith("x") for row in eager_rows)  # speed-up vs the baseline
