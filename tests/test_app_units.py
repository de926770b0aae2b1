"""The app's small pieces without a server: time formatting, the gallery's step picker, per-edit slider ranges."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import httpx
import pytest

import app
from pti.editor import FaceEditor


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (-3, "0 s"), (12, "12 s"), (12.6, "13 s"), (59.4, "59 s"), (59.6, "1 min 0 s"), (60, "1 min 0 s"),
    (125, "2 min 5 s"), (3599, "59 min 59 s"), (3600, "1 h 0 min"), (3629, "1 h 0 min"), (3631, "1 h 1 min"),
    (4000, "1 h 7 min"), (7170, "2 h 0 min"), (7199, "2 h 0 min"), (90061, "25 h 1 min"),
])
def test_format_seconds_rounds_to_what_a_clock_shows(seconds, text):
    assert app.format_seconds(seconds) == text


def test_format_seconds_docstring_examples_hold():
    for example in app.format_seconds.__doc__.split(".")[0].split(", "):
        seconds, text = example.split(" -> ")
        assert app.format_seconds(float(seconds)) == text.strip("'")


@pytest.mark.parametrize("index, step", [(0, None), (1, 0), (2, 1), (7, 6)])
def test_clicking_a_gallery_image_picks_its_chain_step(index, step):
    """The gallery's first image is the start (no step to remove); image k is chain step k - 1."""
    assert app.selected_step(SimpleNamespace(index=index)) == step


@pytest.fixture(scope="module")
def handlers(landmarks_model_path, tmp_path_factory):
    editor = FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False)
    options = app.AppOptions(model="tiny", device="cpu", lpips="random")
    return app.SessionHandlers(editor, app.session_store(options), tmp_path_factory.mktemp("downloads"))


def test_each_edit_gets_its_own_slider_range(handlers):
    options = handlers.editor.edit_options()
    assert len({(o.min, o.max, o.step, o.default) for o in options}) > 1  # the edits do differ
    for option in options:
        slider = handlers.edit_slider(option.key)
        assert (slider.minimum, slider.maximum, slider.step, slider.value) == (option.min, option.max, option.step,
                                                                               option.default), option.key
        assert slider.label == f"Strength of {option.label}"
    unknown = handlers.edit_slider("interfacegan:no_such_edit")
    assert unknown.label is None  # no edit chosen: the slider is left as it is


def test_the_app_serves_though_gradios_check_of_its_own_url_fails(monkeypatch, handlers):
    """Gradio checks the local URL after the start with a HEAD request that gives up after 3 s, and stops the app if
    it fails: on a busy CPU that stopped an app that served (and made tests wait for gradio's printed hint)."""
    import gradio.networking

    monkeypatch.setattr(gradio.networking, "url_ok", lambda url: False)  # as when that HEAD request timed out
    options = app.AppOptions(model="tiny", device="cpu", host="127.0.0.1", port=None, lpips="random")
    demo = app.build_demo(handlers.editor, options)
    try:
        demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options(options))  # port None: first free one
        assert httpx.get(f"{demo.local_url}gradio_api/startup-events", timeout=60).status_code == 200
    finally:
        demo.close()


@pytest.mark.upstream
def test_stock_gradio_stops_an_app_that_serves_when_its_url_check_fails(monkeypatch):
    """The stock behaviour the workaround in pti/serving/gradio_launch.py is for: when this fails after an upgrade,
    Gradio no longer gives up on its own URL, and the workaround can go."""
    import gradio.networking

    monkeypatch.setattr(gradio.networking, "url_ok", lambda url: False)
    with gr.Blocks() as demo:
        gr.Markdown("serving")
    try:
        with pytest.raises(ValueError, match="When localhost is not accessible"):
            demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    finally:
        demo.close()
