"""The app launched in the test process on a free local port (tiny model, offline), for `gradio_client` tests."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

from app_process import free_port

import app

PORT_ATTEMPTS = 5


def launch(editor, options: app.AppOptions, store=None, attempts: int = PORT_ATTEMPTS):
    """Build and launch the app in this process; returns (demo, url). A port taken by someone else between
    `free_port()` and the launch is replaced by another free one (the race of picking a port, closed by retrying)."""
    for attempt in range(attempts):
        demo = app.build_demo(editor, options, store=store)
        try:
            demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options(options))
        except OSError:
            demo.close()
            if attempt == attempts - 1:
                raise
            options = dataclasses.replace(options, port=free_port())
            continue
        return demo, f"http://127.0.0.1:{options.port}/"


@contextlib.contextmanager
def served(editor, options: app.AppOptions, store=None) -> Iterator[str]:
    """The app launched on a free port (as `launch`) for the `with` block; yields its URL."""
    demo, url = launch(editor, dataclasses.replace(options, port=free_port()), store)
    try:
        yield url
    finally:
        demo.close()
