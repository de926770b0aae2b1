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
PROBE_TIMEOUT_S = 10  # one readiness request


def free_port() -> int:
    """A TCP port nobody listens on right now (someone may take it before it is used: retry on a bind error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (Linux: its socket inodes in /proc/PID/fd,
    matched against /proc/net/tcp and tcp6)."""
    try:
        inodes = {os.readlink(fd.path)[len("socket:["):-1] for fd in os.scandir(f"/proc/{pid}/fd")
                  if os.readlink(fd.path).startswith("socket:[")}
    except FileNotFoundError:  # the process has exited (its exit is checked by the caller)
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
                if local_port == port and state == "0A" and inode in inodes:  # 0A: LISTEN
                    return True
    return False


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
        if _wait_until_served(process, port, log_path, last_attempt=attempt == PORT_ATTEMPTS - 1):
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


def _wait_until_served(process: subprocess.Popen, port: int, log_path: Path, *, last_attempt: bool) -> bool:
    """Wait until the app serves with its queue running (True), or it exited because its port was taken (False,
    unless `last_attempt`); any other exit, or no start within STARTUP_TIMEOUT_S, fails the test with the log.

    The signs are states, not a line it prints: first the app's process listens on the port (read from /proc, no
    request), then `GET /gradio_api/startup-events` answers, which it does only once the app's startup events (its
    queue) have run. A request that takes long (a busy machine) is simply asked again; app.py does not let gradio
    check its own URL after the start (`launch_options`), so these requests cannot make it give up."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    probe = f"http://127.0.0.1:{port}/gradio_api/startup-events"
    try:
        while True:
            if process.poll() is not None:
                if PORT_TAKEN in log_path.read_text() and not last_attempt:
                    return False
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not start within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            if listens(process.pid, port):  # only then ask: the port may have been taken by another server
                with contextlib.suppress(httpx.TransportError):  # slow to answer (a busy machine): ask again
                    if httpx.get(probe, timeout=PROBE_TIMEOUT_S).status_code == 200:
                        return True
            time.sleep(0.5)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
