"""A loopback stand-in for the ZeroGPU device API that the `spaces` package calls on a Space (tests only).

`spaces` (ZeroGPU mode: `SPACES_ZERO_GPU=true`, `SPACES_ZERO_DEVICE_API_URL=<this server>`) sends, all as POST with
the parameters in the query string:
- `/startup-report` once, when the app launches -> 200;
- `/schedule?cgroupPath&taskId&enableQueue&tokenVersion[&durationSeconds][&gpuSize][&token]` before each call of a
  `@spaces.GPU` function -> 200 JSON `{idle, nvidiaIndex, nvidiaUUID, allowToken}`, or 429 JSON `{left, wait}` with
  a negative wait when the duration is over the cap (the client says "illegal duration");
- `/allow?allowToken&pid` from inside the forked worker -> 200 for a scheduled token;
- `/release?allowToken&fail` when the call ends -> 200 for a scheduled token, 404 for an unknown one.
This server answers so on 127.0.0.1 and a free port, in a daemon thread, and records every call.
"""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class DeviceCall:
    """One request to the device API: its path and query parameters (one value each)."""

    path: str
    params: dict[str, str]


class FakeDeviceAPI:
    """Context manager running the stand-in; `url` is its base URL, `calls` what it received, in order."""

    def __init__(self, *, max_duration_s: int = 120) -> None:
        self.max_duration_s = max_duration_s  # longer requested durations are refused as ZeroGPU does (429)
        self.calls: list[DeviceCall] = []
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeDeviceAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls_to(self, path: str) -> list[DeviceCall]:
        """The calls received on `path` (e.g. '/schedule'), in order."""
        with self._lock:
            return [call for call in self.calls if call.path == path]

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, dict | None]:
        """(status, JSON body) for one call; records it."""
        with self._lock:
            self.calls.append(DeviceCall(path, params))
            if path == "/startup-report":
                return 200, None
            if path == "/schedule":
                duration = int(params.get("durationSeconds", 60))
                if duration > self.max_duration_s:
                    return 429, {"left": self.max_duration_s, "wait": -1}
                token = uuid.uuid4().hex
                self._tokens.add(token)
                return 200, {"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-loopback-0", "allowToken": token}
            if path == "/allow":
                return (200 if params.get("allowToken") in self._tokens else 404), None
            if path == "/release":
                token = params.get("allowToken")
                if token not in self._tokens:
                    return 404, None
                self._tokens.discard(token)
                return 200, None
            return 404, None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                params = {name: values[-1] for name, values in parse_qs(parts.query).items()}
                status, body = api._answer(parts.path, params)
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:  # quiet
                pass

        return Handler
