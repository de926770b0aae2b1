"""Launching without Gradio's check of its own local URL: a workaround for apps stopped at start on a busy machine.

Gradio (checked: 6.31.0) ends `Blocks.launch` with `networking.url_ok(local_url)`, a HEAD request to the app that
gives up on the first 3 s timeout; `launch` then raises "When localhost is not accessible, a shareable link must be
created" and the app, which serves, stops. A busy CPU (a Space starting beside other work, a CI machine) is enough.
In these versions the private `launch(_frontend=False)` skips that check and nothing else. See
docs/upstream/gradio-url-ok-timeout.md; remove this module once Gradio retries on a timeout
(tests/test_app_units.py tells, on an upgrade, whether the stock launch still gives up).
"""
from __future__ import annotations

import gradio
from packaging.version import Version

# Gradio versions checked to stop on the check and to use `_frontend` for nothing else: [first, first not checked).
AFFECTED_VERSIONS = (Version("6.31.0"), Version("6.32"))


def without_local_url_check() -> dict:
    """Extra arguments of `Blocks.launch` that skip the check of the local URL, in the checked Gradio versions ({}
    in others)."""
    if AFFECTED_VERSIONS[0] <= Version(gradio.__version__) < AFFECTED_VERSIONS[1]:
        return {"_frontend": False}
    return {}
