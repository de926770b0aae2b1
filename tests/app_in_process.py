"""The app launched in the test process on a free local port (tiny model, offline), for `gradio_client` tests."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

from app_process import free_port

import app

PORT_ATTEMPTS = 5


@contextlib.contextmanager
def served(editor, options: app.AppOptions, store=None) -> Iterator[str]:
    """Build and launch the app over `editor`; yields its URL and closes it after. A port taken by someone else
    between `free_port()` and the launch is replaced by another free one."""
    for attempt in range(PORT_ATTEMPTS):
        options = dataclasses.replace(options, port=free_port())
        demo = app.build_demo(editor, options, store=store)
        try:
            demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options(options))
        except OSError:
            demo.close()
            if attempt == PORT_ATTEMPTS - 1:
                raise
            continue
        break
    try:
        yield f"http://127.0.0.1:{options.port}/"
    finally:
        demo.close()
