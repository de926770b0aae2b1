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
    """A TCP port nobody listens on right now (someone may take it before it is used: retry on a bind error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# What Gradio says when the port it was given is taken (then the start is retried on another free port).
PORT_TAKEN = "Cannot find empty port"
PORT_ATTEMPTS = 3


@contextlib.contextmanager
def running_app(landmarks: Path, log_path: Path, env: dict[str, str] | None = None, *, script: str = "app.py",
                extra_args: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the tiny app (`script` with app.py's flags) on a free port in its own process group, wait until it
    serves, yield (URL, process); terminate the whole group at the end (killed if it does not stop in 20 s).
    A port taken by someone else between `free_port()` and the app's bind is replaced by another one."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        command = [sys.executable, script, "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
                   "--landmarks", str(landmarks), "--lpips", "random", *extra_args]
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        if _wait_until_served(process, log_path, last_attempt=attempt == PORT_ATTEMPTS - 1):
            break
    url = f"http://127.0.0.1:{port}/"
    try:
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


def _wait_until_served(process: subprocess.Popen, log_path: Path, *, last_attempt: bool) -> bool:
    """Wait until the app serves (True), or it exited because its port was taken (False, unless `last_attempt`);
    any other exit, or no start within STARTUP_TIMEOUT_S, fails the test with the log."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        # Gradio prints the share hint once its own check of the local URL has passed: only then is it up.
        # (Polling the page earlier competes with that check, which gives up after 3 s on a busy machine.)
        while "set `share=True`" not in log_path.read_text():
            if process.poll() is not None:
                if PORT_TAKEN in log_path.read_text() and not last_attempt:
                    return False
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not start within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return True
