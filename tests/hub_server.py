"""A loopback HTTP server that answers like the Hugging Face Hub's `resolve` endpoint (tests only).

`huggingface_hub.hf_hub_download` sends `HEAD {endpoint}/{prefix}{repo_id}/resolve/{revision}/{filename}`
(prefix `datasets/` or `spaces/` for those repo types) and reads `X-Repo-Commit`, `X-Linked-Etag` / `ETag`
and `X-Linked-Size` / `Content-Length`; then it GETs the same URL and stores the body in its cache under
`blobs/<etag>`, linked from `snapshots/<commit>/<filename>`. Errors carry `X-Error-Code` (`EntryNotFound`,
`RepoNotFound`), which the client turns into its typed exceptions. This server does exactly that for the
files it is given, on 127.0.0.1 and a free port, in one daemon thread, and records every request.
"""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the one commit every served repo is at
_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_RESOLVE = re.compile(r"^/(?P<prefix>(?:datasets/|spaces/)?)(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


@dataclass(frozen=True)
class HubFile:
    """One file the fake Hub serves."""

    repo_id: str
    filename: str
    content: bytes
    repo_type: str = "model"

    @property
    def sha256(self) -> str:
        """sha256 of the content (what the Hub reports as the ETag of an LFS file)."""
        return hashlib.sha256(self.content).hexdigest()


class FakeHub:
    """Context manager running the server; `url` is its endpoint, `requests` the (method, path) seen."""

    def __init__(self, *files: HubFile, hub_like: bool = True):
        self.files = {(_PREFIXES[f.repo_type] + f.repo_id, f.filename): f for f in files}
        self.hub_like = hub_like  # False: answer 200 without the Hub's headers (a proxy or a wrong endpoint)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut the server down and free its port (idempotent); later requests are refused."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a thread for long

            def log_message(self, format, *args):  # noqa: A002 - the base class's signature
                pass

            def do_HEAD(self):
                self._answer(send_body=False)

            def do_GET(self):
                self._answer(send_body=True)

            def _answer(self, send_body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub._record(self.command, path)
                match = _RESOLVE.match(path)
                if not hub.hub_like:
                    return self._send(200, {"Content-Length": "2"}, b"ok", send_body)
                if match is None:
                    return self._send(404, {"X-Error-Code": "RepoNotFound"}, b"not found", send_body)
                repo = match["prefix"] + match["repo"]
                served = hub.files.get((repo, match["file"]))
                if not any(key[0] == repo for key in hub.files):
                    return self._send(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                                      b"Repository not found", send_body)
                if served is None or match["revision"] not in ("main", COMMIT):
                    return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                            "X-Repo-Commit": COMMIT}, b"Entry not found", send_body)
                etag = f'"{served.sha256}"'
                size = str(len(served.content))
                headers = {"X-Repo-Commit": COMMIT, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": size,
                           "Content-Length": size, "Content-Type": "application/octet-stream"}
                return self._send(200, headers, served.content, send_body)

            def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        return Handler
