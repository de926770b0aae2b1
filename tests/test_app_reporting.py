"""What the app tells people about results, word for word, without a server or a model: the progress line, the
status lines of an inversion and of edits, the image labels, the gallery captions, the step picker, the downloads
and the time estimate. The editor is a stand-in that returns known numbers, so every figure shown can be checked.
(The real flow through the server is in test_app_client.py; these are fast enough for mutation testing.)"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from editing_directions.edit import Edit
from editing_directions.library import EditOption
from pti.editor import Downloads, InversionFiles, Reconstruction, SettingsError
from pti.progress import Progress
from pti.serving.durations import Estimate

RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
OPTIONS = (EditOption("interfacegan", "age", "Age", -3, 3, 0.1, 0.0),
           EditOption("ganspace", "glasses", "Glasses", -5, 5, 0.5, 1.0))


def solid(colour, size=8) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def colour_of(shown) -> tuple[int, ...]:
    """The mean colour of an image as the app hands it over (an image, a path, or a gradio component's value)."""
    if isinstance(shown, gr.Image):
        shown = shown.value
    if isinstance(shown, dict):
        shown = shown["path"]
    picture = shown if isinstance(shown, Image.Image) else Image.open(shown)
    return tuple(int(round(c)) for c in np.asarray(picture.convert("RGB"), dtype=float).mean(axis=(0, 1)))


def close(shown, colour) -> bool:
    return max(abs(a - b) for a, b in zip(colour_of(shown), colour)) <= 8  # webp in gradio's cache is lossy


class StandInEditor:
    """What SessionHandlers asks of a FaceEditor, with known answers; records what it was asked."""

    hardware = "CPU (2 threads)"

    def __init__(self) -> None:
        self.estimated: list = []
        self.estimated_faces: list = []
        self.written: list = []
        self.estimate_answer = Estimate(75.0, measured=True)
        self.channels = 12
        self.asked: list = []  # (what, arguments) of paste_back and text_channels

    def edit_options(self):
        return OPTIONS

    def estimate(self, settings, *, faces=1):
        self.estimated.append(settings)
        self.estimated_faces.append(faces)
        return self.estimate_answer

    def write_inversion_files(self, session, folder):
        files = InversionFiles(aligned=folder / "aligned.png", pivot=folder / "pivot.npy",
                               tuned_weights=folder / "tuned.safetensors")
        self.written.append(("inversion", session, folder))
        return files

    def write_downloads(self, session, folder, *, pasted):
        self.written.append(("downloads", session, folder, pasted))
        files = session.files
        return Downloads(aligned=files.aligned, final=folder / "final.png", pivot=files.pivot,
                         tuned_weights=files.tuned_weights, chain=folder / "edit_chain.json",
                         pasted=None if pasted is None else folder / "pasted_back.png")

    def paste_back(self, photo, edited):
        self.asked.append(("paste_back", photo, edited))
        return solid(GREY, 16)

    def render_chain(self, session, edits):
        return (session.step_images[0], *(solid((40 * (i + 1), 0, 0)) for i in range(len(edits))))

    def text_edit(self, neutral, target, alpha, beta):
        return Edit("text", target, alpha, neutral=neutral, beta=beta)

    def text_channels(self, edit):
        self.asked.append(("text_channels", edit))
        return self.channels


class DictStore:
    """A session store that keeps everything (the real one's bounds are tested elsewhere)."""

    def __init__(self) -> None:
        self.sessions: dict = {}

    def put(self, key, session):
        self.sessions[key] = session

    def get(self, key):
        return self.sessions.get(key)

    def release(self, key):
        self.sessions.pop(key, None)

    def eviction_notice(self, key):
        return None


@pytest.fixture()
def editor():
    return StandInEditor()


@pytest.fixture()
def handlers(editor, tmp_path):
    return app.SessionHandlers(editor, DictStore(), tmp_path)


REQUEST = SimpleNamespace(session_hash="session-1")


def inversion(seconds=125.4):
    return SimpleNamespace(pivot_render=Reconstruction(solid(RED), 0.23456, 0.012345),
                           tuned_render=Reconstruction(solid(BLUE), 0.04321, 0.0012344), seconds=seconds)


def inverted(handlers, seconds=125.4):
    photo = SimpleNamespace(aligned=SimpleNamespace(image=solid(GREEN, 16)))
    held: list[Path] = []
    return handlers.inverted_outputs(photo, inversion(seconds), REQUEST, held), held


# ----- progress --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("progress, pivot, line", [
    (Progress("projection", 10, 100, {"lpips": 0.123456, "noise": 1.23456e-5}, elapsed_s=5.0), "w",
     "**Projection (finding the pivot)** · step 10/100 · lpips 0.1235 · noise 1.235e-05 · 5 s elapsed, about 45 s "
     "left in this phase"),
    (Progress("projection", 1, 1, {"e4e": 0.5}, elapsed_s=0.4), "e4e",
     "**e4e encoder (finding the pivot)** · step 1/1 · e4e 0.5 · 0 s elapsed, about 0 s left in this phase"),
    (Progress("tuning", 30, 350, elapsed_s=61.0), "w",
     "**Pivotal tuning** · step 30/350 · 1 min 1 s elapsed, about 10 min 51 s left in this phase"),
    (Progress("tuning", 0, 350, {"loss": 2.0}, elapsed_s=3.0), "e4e",
     "**Pivotal tuning** · step 0/350 · loss 2 · 3 s elapsed, about 17 min 30 s left in this phase"),
])
def test_the_progress_line_says_phase_step_losses_and_time_left(progress, pivot, line):
    assert app.describe_progress(progress, pivot) == line


def test_the_progress_line_defaults_to_the_w_pivot():
    assert app.describe_progress(Progress("projection", 1, 2, elapsed_s=1.0)).startswith(
        "**Projection (finding the pivot)** · step 1/2 · 1 s elapsed, about 1 s left")


# ----- alignment and estimate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("faces, line", [
    (1, "1 face found. Check the settings and press **Invert**."),
    (3, "3 faces found: pick another one under the photo. Check the settings and press **Invert**."),
])
def test_the_aligned_status_counts_the_faces(faces, line):
    photo = SimpleNamespace(aligned=SimpleNamespace(faces=[object()] * faces))
    assert app.SessionHandlers.aligned_status(photo) == line


@pytest.mark.parametrize("arguments, answer, line", [
    (("paper", 500, 350, True, 0, "w"), Estimate(75.0, True),
     "Settings: 500 projection + 350 tuning steps, locality regularisation on (*Inversion settings* below) · about "
     "**1 min 15 s** on this CPU (2 threads)."),
    (("fast", 10.0, 20.0, False, 3, "e4e"), Estimate(12.4, False),
     "Settings: e4e pivot (one encoder pass) + 20 tuning steps, locality regularisation off (*Inversion settings* "
     "below) · about **12 s** on this CPU (2 threads) (a first guess: the first inversion here measures it)."),
])
def test_the_estimate_line_gives_the_settings_and_the_time(handlers, editor, arguments, answer, line):
    editor.estimate_answer = answer
    assert handlers.estimate(*arguments) == line
    settings = editor.estimated[-1]
    assert (settings.preset, settings.projection_steps, settings.tuning_steps, settings.locality, settings.seed,
            settings.pivot) == (arguments[0], int(arguments[1]), int(arguments[2]), arguments[3], arguments[4],
                                arguments[5])


def test_the_estimate_line_says_what_is_wrong_with_the_settings(handlers, editor):
    assert handlers.estimate("custom", 2.5, 3, False, 0, "w") == "projection steps must be a whole number, got 2.5"

    def refuse(settings, *, faces=1):
        raise SettingsError("these settings need about 999 s of GPU time, more than one ZeroGPU call may take")

    editor.estimate = refuse
    assert handlers.estimate("custom", 2, 3, False, 0, "w") == (
        "these settings need about 999 s of GPU time, more than one ZeroGPU call may take")


def test_the_estimate_line_for_every_face_of_a_group(handlers, editor):
    group = SimpleNamespace(group=SimpleNamespace(faces=("face 1", "face 2", "face 3")))
    assert handlers.estimate("custom", 2, 3, True, 0, "w", "all", group) == (
        "Settings: 2 projection + 3 tuning steps per face, locality regularisation on (*Inversion settings* below) · "
        "about **1 min 15 s** for all 3 faces on this CPU (2 threads).")
    assert handlers.estimate("custom", 2, 3, True, 0, "e4e", "all", group).startswith(
        "Settings: e4e pivot (one encoder pass) + 3 tuning steps per face, locality")
    assert handlers.estimate("custom", 2, 3, True, 0, "w", "one", group).startswith(
        "Settings: 2 projection + 3 tuning steps, locality")  # this face only
    assert editor.estimated_faces == [3, 3, 1]


# ----- inversion ---------------------------------------------------------------------------------------------------

def test_an_inversion_is_shown_with_its_own_numbers_and_images(handlers, editor):
    (status, pivot, tuned, gallery, steps, result, files), held = inverted(handlers)
    assert status == ("Inverted in 2 min 5 s. LPIPS / MSE to the aligned face: pivot 0.235 / 0.0123, PTI 0.043 / "
                      "0.0012 (LPIPS-AlexNet; MSE on pixels in [-1, 1]). Now add edits below.")
    assert pivot.label == "Pivot · LPIPS 0.235 · MSE 0.0123" and close(pivot, RED)
    assert tuned.label == "PTI reconstruction · LPIPS 0.043 · MSE 0.0012" and close(tuned, BLUE)
    assert [caption for _, caption in gallery] == ["0. start: PTI reconstruction"] and close(gallery[0][0], BLUE)
    assert steps.choices == [] and steps.value is None
    assert result.label == "Final face" and close(result, BLUE)
    # Stored as the session's start, its files written once into the folder that is held until gradio copied them.
    session = handlers.store.get(REQUEST.session_hash)
    assert session.edits == () and len(session.step_images) == 1 and close(session.step_images[0], BLUE)
    assert session.photo.aligned.image.size == (16, 16) and session.inversion.seconds == 125.4
    (kind, written, folder), downloads = editor.written[0], editor.written[1]
    assert kind == "inversion" and "-inversion-" in folder.name and session.files.pivot.parent == folder
    assert written.photo is session.photo and written.inversion is session.inversion and written.files is None
    assert downloads[0] == "downloads" and downloads[1] is session and downloads[3] is None
    assert files == [str(folder / "aligned.png"), str(downloads[2] / "final.png"), str(folder / "pivot.npy"),
                     str(folder / "tuned.safetensors"), str(downloads[2] / "edit_chain.json")]
    assert held == [folder, folder, downloads[2]]


def test_an_inversion_under_a_minute_says_seconds(handlers):
    (status, *_), _ = inverted(handlers, seconds=7.6)
    assert status.startswith("Inverted in 8 s. ")


# ----- edits -------------------------------------------------------------------------------------------------------

def test_edits_are_captioned_listed_and_counted(handlers, editor):
    inverted(handlers)
    session = handlers.store.get(REQUEST.session_hash)
    edits = (Edit("interfacegan", "age", 2.0), Edit("ganspace", "glasses", -1.5),
             Edit("text", "grey hair", 4.1, neutral="a face", beta=0.15), Edit("interfacegan", "unlisted", 1.0))
    held: list[Path] = []
    gallery, steps, result, files, status = handlers.apply_edits(session, lambda _: edits, True, REQUEST, held)
    captions = ["1. Age +2 · InterfaceGAN", "2. Glasses -1.5 · GANSpace", "3. a face → grey hair +4.1 · Text β 0.15",
                "4. unlisted +1 · InterfaceGAN"]
    assert [caption for _, caption in gallery] == ["0. start: PTI reconstruction", *captions]
    assert [colour_of(image) for image, _ in gallery[1:]] == [(40, 0, 0), (80, 0, 0), (120, 0, 0), (160, 0, 0)]
    assert steps.choices == [(caption, i) for i, caption in enumerate(captions)] and steps.value == 3
    assert status == "4 edits in the chain."
    assert result.label == "Pasted back into the photo" and close(result, GREY)  # the stand-in's pasted photo
    (what, photo, edited), = editor.asked  # the session's photo, with the chain's last step pasted in
    assert what == "paste_back" and photo is session.photo and colour_of(edited) == (160, 0, 0)
    assert [Path(path).name for path in files] == ["aligned.png", "final.png", "pasted_back.png", "pivot.npy",
                                                   "tuned.safetensors", "edit_chain.json"]
    stored = handlers.store.get(REQUEST.session_hash)
    assert stored.edits == edits and len(stored.step_images) == 5
    assert handlers.apply_edits(session, lambda _: edits[:1], False, REQUEST, [])[4] == "1 edit in the chain."
    gallery, steps, result, files, status = handlers.apply_edits(session, lambda _: (), False, REQUEST, [])
    assert status == "The chain is empty." and steps.value is None and len(gallery) == 1
    assert result.label == "Final face" and "pasted_back.png" not in [Path(path).name for path in files]


def test_step_captions_of_unknown_kinds_and_labels():
    edit = SimpleNamespace(kind="newkind", name="thing", strength=-0.25, neutral=None, beta=None)
    assert app.step_caption(7, edit, {}) == "7. thing -0.25 · newkind"
    assert app.step_caption(1, Edit("styleclip", "afro", 0.1), {"styleclip:afro": "Afro"}) == "1. Afro +0.1 · StyleCLIP"


@pytest.mark.parametrize("channels, moves, paste_back", [(1, "moves **1** style channel", False),
                                                         (0, "moves **0** style channels", True),
                                                         (150, "moves **150** style channels", False)])
def test_a_text_edit_says_how_many_channels_it_moves(handlers, editor, channels, moves, paste_back):
    inverted(handlers)
    editor.channels = channels
    (*_, result, _, status), = handlers.add_text_edit("a face", "a smiling face", 3.0, 0.12, paste_back, app.ALL_FACES,
                                                     REQUEST)
    assert status == (f"Text edit 'a face' → 'a smiling face' {moves} (about 10-20 for a colour, 100-200 for a shape "
                      "is typical; beta sets how many). 1 edit in the chain.")
    counted = [asked[1] for asked in editor.asked if asked[0] == "text_channels"]
    assert counted == [Edit("text", "a smiling face", 3.0, neutral="a face", beta=0.12)]  # the edit just made
    assert result.label == ("Pasted back into the photo" if paste_back else "Final face")


def test_results_of_a_replaced_inversion_are_refused(handlers):
    _, held = inverted(handlers)
    session = handlers.store.get(REQUEST.session_hash)
    handlers.folders.release(held)  # gradio has copied its files
    inverted(handlers)  # a newer inversion replaces its folder, which goes
    with pytest.raises(gr.Error) as raised:
        handlers.result_outputs(session, False, REQUEST, [])
    assert raised.value.message == "A newer photo or inversion replaced this one."
    assert raised.value.print_exception is False  # a message for people, not a traceback in the server's log


def test_a_chain_whose_images_do_not_match_its_edits_is_refused(handlers):
    inverted(handlers)
    session = handlers.store.get(REQUEST.session_hash)
    broken = dataclasses.replace(session, edits=(Edit("interfacegan", "age", 1.0),))  # no image for the edit
    with pytest.raises(ValueError, match="zip"):
        handlers.result_outputs(broken, False, REQUEST, [])
