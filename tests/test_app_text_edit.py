"""Text edits in the app through `gradio_client` (tiny model, offline): a text edit stacked between an InterfaceGAN and
a mapper edit, its channel count shown, bad sentences refused with the chain kept."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from app_in_process import served
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from editing_directions import Edit

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.png"
QUICK_SETTINGS = ("fast", 2, 1, False, 0, "w")


@pytest.fixture(scope="module")
def options(landmarks_model_path) -> app.AppOptions:
    return app.AppOptions(model="tiny", device="cpu", host="127.0.0.1",
                          landmarks=str(landmarks_model_path), lpips="random")


@pytest.fixture(scope="module")
def editor(options):
    return app.load_editor(options)


@pytest.fixture(scope="module")
def url(editor, options):
    with served(editor, options) as address:
        yield address


def pixels(path: str | dict) -> np.ndarray:
    if isinstance(path, dict):
        path = path.get("value") or path.get("image")
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


def test_the_text_edit_panel_is_on_the_page(url):
    components = httpx.get(f"{url}config").json()["components"]
    props = {c["props"].get("elem_id"): c["props"] for c in components if c.get("props", {}).get("elem_id")}
    assert props["text-edit"]["visible"] is True
    assert props["neutral"]["value"] == "a face"
    assert (props["alpha"]["minimum"], props["alpha"]["maximum"], props["alpha"]["value"]) == (-10, 10, 4.1)
    assert (props["beta"]["minimum"], props["beta"]["maximum"], props["beta"]["value"]) == (0.08, 0.3, 0.15)


def test_a_text_edit_stacks_between_an_interfacegan_and_a_mapper_edit(url, editor):
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        client.predict(*QUICK_SETTINGS, api_name="/invert")
        first = client.predict("interfacegan:age", 2.0, False, api_name="/add_edit")
        text = client.predict("a face", "a smiling face", 4.1, 0.15, False, api_name="/add_text_edit")
        channels = editor.text_channels(Edit.text("a smiling face", 4.1))
        assert 0 < channels < 208
        assert text[4] == (f"Text edit 'a face' → 'a smiling face' moves **{channels}** style channels (about 10-20 "
                           "for a colour, 100-200 for a shape is typical; beta sets how many). 2 edits in the chain.")
        third = client.predict("styleclip:demo_1", 0.1, False, api_name="/add_edit")
        captions = [item["caption"] for item in third[0]]
        assert captions[1].endswith("+2 · InterfaceGAN")
        assert captions[2] == "2. a face → a smiling face +4.1 · Text β 0.15"
        assert captions[3].startswith("3. Random demo mapper 1")
        steps = [pixels(item) for item in third[0]]
        assert all(not np.array_equal(a, b) for a, b in zip(steps, steps[1:]))
        # A step rendered again in a larger batch may differ by one rounding step (the batch sums in another order).
        assert np.abs(steps[1] - pixels(first[0][1])).max() <= 1 and np.abs(steps[2] - pixels(text[0][2])).max() <= 1
        assert np.array_equal(pixels(third[2]), steps[3])
        chain = json.loads(next(Path(p) for p in third[3] if p.endswith("edit_chain.json")).read_text())
        assert chain["edits"][1] == {"kind": "text", "name": "a smiling face", "strength": 4.1, "neutral": "a face",
                                     "beta": 0.15}

        # Bad input: a readable message naming the fix, and the chain and result kept.
        for args, message in [
            (("a face", "  ", 4.1, 0.15), "target sentence of the text edit is empty"),
            (("", "grey hair", 4.1, 0.15), "neutral sentence of the text edit is empty"),
            (("a face", "A face", 4.1, 0.15), "same as the neutral one"),
            (("a face", "a face with " + "very " * 70 + "long hair", 4.1, 0.15), "too long for CLIP"),
        ]:
            with pytest.raises(AppError, match=message):
                client.predict(*args, False, api_name="/add_text_edit")
        kept, files = client.predict(False, api_name="/paste_back")
        assert np.array_equal(pixels(kept), steps[3])
        chain = json.loads(next(Path(p) for p in files if p.endswith("edit_chain.json")).read_text())
        assert len(chain["edits"]) == 3

        # Another alpha and beta: another edit on top, with its own channel count.
        again = client.predict("a face", "a smiling face", -3.0, 0.08, False, api_name="/add_text_edit")
        more = editor.text_channels(Edit.text("a smiling face", -3.0, beta=0.08))
        assert more > channels and f"moves **{more}** style channels" in again[4]
        assert len(again[0]) == 5
    finally:
        client.close()
