"""Load and soak: many clients at once against the app process, and many inversions in a row (loopback only).

The app runs as people launch it (`python app.py --model tiny`, a child process) with small memory limits, so that
sessions are written to disk and read back while others work. Every request count and wait is bounded. The figures
(latency per endpoint, memory) are printed and written to bench/results/load.json; bench/README.md records them.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_process import running_app
from gradio_client import Client, handle_file
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PHOTOS = (REPO / "examples" / "astronaut.png", REPO / "examples" / "grace_hopper.jpg")
CLIENTS = 12
SETTINGS = ("fast", 3, 2, True, 0, "w")
EDITS = (("interfacegan:age", 2.0), ("interfacegan:smile", -1.5))
SOAK_INVERSIONS = 50
# Resident memory may grow this much from the 5th to the 50th inversion (allocator caches, Gradio's own records).
SOAK_GROWTH_BOUND_MB = 150
RESULTS = REPO / "bench" / "results"


def pixels(output: str | dict) -> np.ndarray:
    """The pixels of an output image as the client downloaded it (a path, or a gradio dict holding one)."""
    if isinstance(output, dict):
        output = output.get("value") or output.get("image")
    with Image.open(output) as opened:
        return np.asarray(opened.convert("RGB"))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def write_figures(name: str, figures: dict) -> None:
    """Print the figures and keep them under bench/results (git-ignored)."""
    print(json.dumps(figures, indent=1))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "load.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**recorded, name: figures}, indent=1))


@pytest.fixture(scope="module")
def loaded_app(tmp_path_factory, landmarks_model_path):
    """The tiny app with room for 2 sessions in memory (the others wait on disk): (url, process, log path)."""
    log = tmp_path_factory.mktemp("load") / "app.log"
    with running_app(landmarks_model_path, log, extra_args=("--max-sessions", "2", "--queue-size", "64")) as (url, p):
        yield url, p, log


def test_many_clients_at_once_each_get_their_own_results(loaded_app):
    url, _, log = loaded_app
    latencies: dict[str, list[float]] = {}
    lock = threading.Lock()

    def timed(client: Client, endpoint: str, *args):
        start = time.monotonic()
        result = client.predict(*args, api_name=endpoint)
        with lock:
            latencies.setdefault(endpoint, []).append(time.monotonic() - start)
        return result

    def one_person(index: int) -> dict:
        photo = PHOTOS[index % 2]
        client = Client(url, verbose=False)
        try:
            aligned = timed(client, "/align", handle_file(str(photo)))
            inverted = timed(client, "/invert", *SETTINGS)
            added = [timed(client, "/add_edit", key, strength, False) for key, strength in EDITS]
            result, files = timed(client, "/paste_back", True)
            return {"photo": photo.name, "aligned": pixels(aligned[0]), "tuned": pixels(inverted[2]),
                    "steps": [pixels(item) for item in added[-1][0]], "pasted": pixels(result),
                    "files": {Path(f).name for f in files}}
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        people = list(pool.map(one_person, range(CLIENTS)))  # any exception fails the test here
    wall = time.monotonic() - started

    by_photo: dict[str, list[dict]] = {}
    for person in people:
        by_photo.setdefault(person["photo"], []).append(person)
    first = {name: group[0] for name, group in by_photo.items()}
    assert not np.array_equal(first[PHOTOS[0].name]["aligned"], first[PHOTOS[1].name]["aligned"])
    for name, group in by_photo.items():
        for person in group:  # same photo and settings, same results: nobody got another person's images
            assert np.array_equal(person["aligned"], first[name]["aligned"])
            assert np.array_equal(person["tuned"], first[name]["tuned"])
            assert len(person["steps"]) == 3 and all(
                np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(person["steps"], first[name]["steps"]))
            assert person["pasted"].shape == first[name]["pasted"].shape
            assert {"pasted_back.png", "tuned.safetensors", "pivot.npy"} <= person["files"]
    server_log = log.read_text()
    assert "Traceback" not in server_log and "freed to make room" not in server_log
    write_figures("clients", {
        "clients": CLIENTS, "requests": sum(len(v) for v in latencies.values()), "failures": 0,
        "wall_s": round(wall, 1),
        "latency_s": {endpoint: {"p50": round(statistics.median(v), 2), "p95": round(percentile(v, 0.95), 2)}
                      for endpoint, v in latencies.items()},
    })


def test_fifty_inversions_in_a_row_keep_memory_bounded(loaded_app):
    url, process, log = loaded_app
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(PHOTOS[0])), api_name="/align")
        memory = {}
        for count in range(1, SOAK_INVERSIONS + 1):
            status = client.predict(*SETTINGS, api_name="/invert")[0]
            assert status.startswith("Inverted in"), status
            if count in (5, SOAK_INVERSIONS):
                memory[count] = resident_mb(process.pid)
    finally:
        client.close()
    growth = memory[SOAK_INVERSIONS] - memory[5]
    write_figures("soak", {"inversions": SOAK_INVERSIONS, "rss_mb_after_5": round(memory[5]),
                           f"rss_mb_after_{SOAK_INVERSIONS}": round(memory[SOAK_INVERSIONS]),
                           "growth_mb": round(growth, 1), "bound_mb": SOAK_GROWTH_BOUND_MB})
    assert growth < SOAK_GROWTH_BOUND_MB
    assert "Traceback" not in log.read_text()
