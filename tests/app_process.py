"""`python app.py --model tiny` started as a person would, in a child process (tests only)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(landmarks: Path, log_path: Path, env: dict[str, str] | None = None, *, script: str = "app.py",
                extra_args: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the tiny app (`script` with app.py's flags) on a free port in its own process group, wait until it
    serves, yield (URL, process); terminate the whole group at the end (killed if it does not stop in 20 s)."""
    port = free_port()
    command = [sys.executable, script, "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
               "--landmarks", str(landmarks), "--lpips", "random", *extra_args]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        # Gradio prints the share hint once its own check of the local URL has passed: only then is it up.
        # (Polling the page earlier competes with that check, which gives up after 3 s on a busy machine.)
        while "set `share=True`" not in log_path.read_text():
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not start within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        assert httpx.get(url, timeout=60).status_code == 200
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
