"""bench/alignment.py on the CPU: one small size writes rows that say the recipe and `align_face` agree there."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "alignment.py"


def test_rows_for_both_photos(tmp_path, landmarks_model_path):
    spec = importlib.util.spec_from_file_location("bench_alignment", BENCH_FILE)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    returned = bench.main(["--megapixels", "0.2", "--repeats", "1", "--predictor", str(landmarks_model_path),
                           "--out", str(tmp_path / "a.json")])
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(returned))
    assert sorted(returned["photos"]) == ["astronaut.png", "grace_hopper.jpg"]
    for (row,) in returned["photos"].values():
        assert abs(row["megapixels"] - 0.2) < 0.01
        assert row["landmarks_max_px"] == 0.0 and row["quad_max_px"] == 0.0  # below RECIPE_MAX_PIXELS: the recipe
