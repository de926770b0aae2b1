"""The app's model object (`pti.editor.FaceEditor`) on the tiny generator, and the optional ZeroGPU decorator."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_oracles import package_lpips
from tiny_e4e import tiny_e4e

from alignment import ImageInputError, NoFaceError
from editing_directions.errors import EditStrengthError, UnknownEditError
from pti.editor import EditingSession, EditorUnavailableError, FaceEditor, Inversion, InversionSettings, \
    SettingsError
from pti.images import pil_to_tensor, tensor_to_pil
from pti.progress import Progress

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICK = InversionSettings(preset="fast", projection_steps=3, tuning_steps=2, locality=True, seed=0)
QUICK_E4E = dataclasses.replace(QUICK, pivot="e4e")


@pytest.fixture(scope="module")
def editor(landmarks_model_path) -> FaceEditor:
    """The tiny model with random LPIPS backbones: everything offline."""
    return FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False)


@pytest.fixture(scope="module")
def photo(editor):
    """The astronaut photo, aligned."""
    return editor.align(editor.load_photo((EXAMPLES / "astronaut.png").read_bytes()))


@pytest.fixture(scope="module")
def inversion(editor, photo) -> Inversion:
    return editor.invert(photo.aligned, QUICK)


@pytest.fixture(scope="module")
def e4e_editor(landmarks_model_path, editor) -> FaceEditor:
    """The tiny model with a tiny e4e (released architecture, random weights, 8 x 32 W+ codes)."""
    return FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False,
                      e4e=tiny_e4e(editor.generator))


def test_settings_are_checked_with_readable_messages():
    with pytest.raises(SettingsError, match="unknown preset 'best'"):
        InversionSettings(preset="best")
    with pytest.raises(SettingsError, match="at least 1 step"):
        InversionSettings(projection_steps=0)
    with pytest.raises(SettingsError, match="tuning steps must be a whole number"):
        InversionSettings(tuning_steps=2.5)
    with pytest.raises(SettingsError, match="seed must be 0 or more"):
        InversionSettings(seed=-1)
    with pytest.raises(SettingsError, match="unknown pivot 'z'"):
        InversionSettings(pivot="z")


def test_presets_and_the_config_they_give(editor):
    paper = editor.settings_for("paper")
    assert (paper.projection_steps, paper.tuning_steps, paper.locality) == (450, 350, True)  # the paper, sec. 4.5
    fast = editor.settings_for("fast")
    assert fast.projection_steps < paper.projection_steps and fast.tuning_steps < paper.tuning_steps
    custom = editor.config_for(InversionSettings(preset="custom", projection_steps=24, tuning_steps=12,
                                                 locality=False))
    assert custom.projection.num_steps == 24 and custom.tuning.num_steps == 12
    assert not custom.tuning.locality.enabled
    assert custom.projection.preview_every == 2 and custom.tuning.preview_every == 1  # a dozen previews a phase
    assert custom.projection.learning_rate == editor.config_for(paper).projection.learning_rate  # paper otherwise


def test_on_a_gpu_the_papers_method_unless_approximate_is_asked(editor, landmarks_model_path, monkeypatch):
    """The GPU's speed settings keep the configuration a CPU gets (float32, full-size tuning LPIPS) by default."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    settings = editor.settings_for("paper")
    assert editor.speed_for(cpu) is None and not editor.approximate
    assert editor.config_for(settings, cuda) == editor.config_for(settings, cpu)
    assert editor.speed_for(cuda).ops_impl == "auto" and editor.speed_for(cuda).tf32
    monkeypatch.setattr(editor, "zerogpu", True)
    assert editor.speed_for(cuda).ops_impl == "ref"  # ZeroGPU's worker has no nvcc to build the fused ops
    assert editor.config_for(settings, cuda) == editor.config_for(settings, cpu)

    approximate = FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False, approximate=True)
    config = approximate.config_for(settings, cuda)
    assert config.tuning.lpips_resolution == 256 and not config.tuning.force_fp32 and not config.projection.force_fp32
    assert approximate.config_for(settings, cpu) == editor.config_for(settings, cpu)
    monkeypatch.setattr(approximate, "zerogpu", True)
    assert approximate.speed_for(cuda).ops_impl == "ref" and approximate.speed_for(cuda).fp16_layers


def test_load_photo_and_align(editor, photo):
    original = Image.open(EXAMPLES / "astronaut.png").convert("RGB")
    assert photo.original.size == original.size
    assert photo.aligned.image.size == (256, 256)  # at least 256 px to show, whatever the generator's size
    assert photo.aligned.original_size == original.size
    with pytest.raises(ImageInputError, match="not an image"):
        editor.load_photo(b"plain text, not a picture")
    with pytest.raises(NoFaceError):
        editor.align(Image.new("RGB", (200, 200), (90, 120, 150)))


def test_inversion_gives_its_own_cpu_generator_and_true_metrics(editor, photo, inversion):
    tuned = inversion.tuned.generator
    assert all(p.device.type == "cpu" for p in tuned.parameters())
    assert tuned is not editor.generator
    original = dict(editor.generator.named_parameters())
    changed = [name for name, p in tuned.named_parameters() if not torch.equal(p, original[name])]
    assert changed and all(name.startswith("synthesis.") for name in changed)
    assert inversion.pivot.w.shape == (1, 32)
    assert inversion.pivot_render.image.size == inversion.tuned_render.image.size == (32, 32)
    # The reported MSE is that of the pivot's renderings (original / tuned generator) against the aligned face.
    target = pil_to_tensor(photo.aligned.image, size=32)
    with torch.no_grad():
        renders = {"pivot": editor.generator.synthesis(inversion.pivot.ws, noise_mode="const", force_fp32=True),
                   "tuned": inversion.tuned.render(inversion.pivot)}
    reference_lpips = package_lpips(editor._require_pipeline().lpips_alex)  # the lpips package's own forward
    for name, render in (("pivot", inversion.pivot_render), ("tuned", inversion.tuned_render)):
        assert abs(float(((renders[name] - target) ** 2).mean()) - render.mse) < 1e-5
        assert np.array_equal(np.asarray(render.image), np.asarray(tensor_to_pil(renders[name])[0]))
        assert render.lpips == pytest.approx(reference_lpips(renders[name], target).item(), rel=1e-5, abs=1e-7)
    assert inversion.tuned_render.lpips != inversion.pivot_render.lpips
    assert inversion.settings == QUICK and inversion.seconds > 0


def test_every_inversion_is_a_new_generator(editor, photo, inversion):
    again = editor.invert(photo.aligned, dataclasses.replace(QUICK, locality=False))
    assert again.tuned.generator is not inversion.tuned.generator
    assert again.timings.locality is False and inversion.timings.locality is True  # as each was asked
    first = dict(inversion.tuned.generator.named_parameters())
    assert all(p.data_ptr() != first[name].data_ptr() for name, p in again.tuned.generator.named_parameters())


def test_invert_steps_reports_both_phases_then_the_inversion(editor, photo):
    before = time.perf_counter()
    items = list(editor.invert_steps(photo.aligned, QUICK))
    wall_clock = time.perf_counter() - before
    progress, last = items[:-1], items[-1]
    assert isinstance(last, Inversion)
    assert all(isinstance(item, Progress) for item in progress)
    assert [(p.phase, p.step) for p in progress] == [("projection", 1), ("projection", 2), ("projection", 3),
                                                     ("tuning", 1), ("tuning", 2)]
    assert all(p.preview is not None for p in progress)  # a preview every step at these step counts
    assert all(p.losses for p in progress)
    # Its timings (which size later ZeroGPU calls) are the last report of each phase; the rest of the call is setup.
    timings = last.timings
    assert (timings.projection_steps, timings.tuning_steps, timings.locality) == (3, 2, True)
    assert (timings.pivot, timings.tuning) == (progress[2].elapsed_s, progress[-1].elapsed_s)
    assert 0 < timings.pivot and 0 < timings.tuning and 0 <= timings.setup
    assert timings.setup + timings.pivot + timings.tuning == pytest.approx(last.seconds, rel=1e-9)
    assert last.seconds <= wall_clock  # the inversion's own time, within the call's
    assert last.settings == QUICK


def test_run_inversion_needs_no_progress_callback(editor, photo):
    inversion = editor.run_inversion(photo.aligned, QUICK, None)  # as its signature allows (mutmut survivor)
    assert isinstance(inversion, Inversion) and inversion.timings.tuning_steps == 2


def test_the_seed_reaches_the_run(editor, photo, inversion):
    seeded = editor.invert(photo.aligned, dataclasses.replace(QUICK, seed=1))
    assert not torch.equal(seeded.pivot.w, inversion.pivot.w)  # seed 0 is the default further down: 1 must arrive


def test_closing_invert_steps_stops_the_run(editor, photo, monkeypatch):
    """Closing stops the run at its next step (the first report after the close answers 'stop', and is its last)."""
    answers = []
    run_inversions = editor.run_inversions

    def recording(aligned_faces, settings, progress_callback):
        def callback(progress):
            answer = progress_callback(progress)
            answers.append((progress.phase, bool(answer)))
            return answer
        return run_inversions(aligned_faces, settings, callback)

    monkeypatch.setattr(editor, "run_inversions", recording)
    long_run = dataclasses.replace(QUICK, projection_steps=500, tuning_steps=500)
    steps = editor.invert_steps(photo.aligned, long_run)
    first = next(steps)
    assert isinstance(first, Progress) and first.phase == "projection"
    closer = threading.Thread(target=steps.close)  # close() waits for the run to end
    closer.start()
    closer.join(timeout=300)
    assert not closer.is_alive(), "closing did not end the run within 300 s"
    assert not any(thread.name == "pti-invert" and thread.is_alive() for thread in threading.enumerate())
    assert answers[-1] == ("projection", True) and [stop for _, stop in answers].count(True) == 1
    assert len(answers) < 500  # stopped in the projection, not after its 500 steps


def test_errors_in_the_worker_reach_the_caller(editor):
    """The worker's own error, as itself (type and message), with the worker's traceback as a note."""
    with pytest.raises(TypeError, match="invert needs an AlignedFace .* got str") as raised:
        list(editor.invert_steps("not an aligned face", QUICK))
    assert "raised in a GPU function" in raised.value.__notes__[0] and "run_inversion" in raised.value.__notes__[0]


def test_e4e_is_offered_only_with_an_encoder_that_fits_and_preselected_on_a_cpu(editor, e4e_editor, photo):
    assert editor.pivot_choices == ("w",) and editor.default_pivot == "w"  # tiny model, no encoder given
    with pytest.raises(SettingsError, match="the 'e4e' pivot is not offered for this model; choose one of w"):
        editor.invert(photo.aligned, QUICK_E4E)
    assert e4e_editor.pivot_choices == ("w", "e4e") and e4e_editor.default_pivot == "e4e"  # on the CPU


def test_inversion_with_the_e4e_pivot(e4e_editor, photo):
    items = list(e4e_editor.invert_steps(photo.aligned, QUICK_E4E))
    progress, inversion = items[:-1], items[-1]
    assert [(p.phase, p.step, p.total) for p in progress] == [("projection", 1, 1), ("tuning", 1, 2),
                                                              ("tuning", 2, 2)]
    assert progress[0].preview is not None  # the e4e pivot's rendering, as soon as it is there
    assert inversion.pivot.source == "e4e" and inversion.pivot.w.shape == (1, 8, 32)
    preview, pivot_render = (np.asarray(image, dtype=np.int16) for image in (progress[0].preview,
                                                                            inversion.pivot_render.image))
    assert np.abs(preview - pivot_render).max() <= 1  # the same code rendered twice (up to a rounding step)
    assert inversion.tuned_render.mse < inversion.pivot_render.mse
    timings = inversion.timings  # no projection steps: the pivot's time is the encoder pass
    assert (timings.projection_steps, timings.tuning_steps, timings.locality) == (0, 2, True)
    assert (timings.pivot, timings.tuning) == (progress[0].elapsed_s, progress[-1].elapsed_s)
    session = EditingSession(photo=photo, inversion=inversion)
    images = e4e_editor.render_chain(session, (e4e_editor.parse_edit("styleclip:demo_1", 0.1),))
    assert len(images) == 2 and not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    assert e4e_editor.estimate_seconds(QUICK_E4E) > 0


def test_an_e4e_that_fails_to_load_is_a_readable_error(landmarks_model_path, editor, photo, tmp_path):
    broken = tmp_path / "e4e.pt"
    broken.write_bytes(b"not a checkpoint")
    failing = FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False, e4e=broken)
    assert failing.pivot_choices == ("w", "e4e")  # offered (a file was given); its failure is told on use
    message = r"The e4e encoder could not be loaded, so the e4e pivot is not available \(the W projection pivot " \
              r"still is\): .*e4e\.pt is not a readable torch checkpoint"
    for attempt in (lambda: failing.prepare_pivot("e4e"), lambda: failing.invert(photo.aligned, QUICK_E4E),
                    lambda: failing.estimate_seconds(QUICK_E4E)):
        with pytest.raises(EditorUnavailableError, match=message):
            attempt()
    failing.prepare_pivot("w")  # the W projection needs nothing more


def test_edit_chain_renders_every_step_without_touching_the_session(editor, photo, inversion):
    session = EditingSession(photo=photo, inversion=inversion, step_images=(inversion.tuned_render.image,))
    before = {name: p.clone() for name, p in inversion.tuned.generator.named_parameters()}
    edits = (editor.parse_edit("interfacegan:age", 2.0), editor.parse_edit("ganspace:smile", -6.0))
    images = editor.render_chain(session, edits)
    assert len(images) == 3 and all(image.size == (32, 32) for image in images)
    assert np.array_equal(np.asarray(images[0]), np.asarray(inversion.tuned_render.image))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    assert not np.array_equal(np.asarray(images[1]), np.asarray(images[2]))
    assert all(torch.equal(p, before[name]) for name, p in inversion.tuned.generator.named_parameters())
    assert np.array_equal(np.asarray(editor.render_chain(session, ())[0]), np.asarray(images[0]))


def test_edits_are_checked(editor):
    keys = [option.key for option in editor.edit_options()]
    assert keys[:3] == ["interfacegan:age", "interfacegan:smile", "interfacegan:pose"]
    assert {key.split(":")[0] for key in keys} == {"interfacegan", "ganspace", "styleclip"}
    with pytest.raises(EditStrengthError, match="outside the allowed range"):
        editor.parse_edit("interfacegan:age", 4.0)
    with pytest.raises(UnknownEditError, match="unknown edit kind 'colour'"):
        editor.parse_edit("colour:red", 1.0)


def test_paste_back_and_downloads(editor, photo, inversion, tmp_path):
    edits = (editor.parse_edit("interfacegan:smile", 1.0),)
    session = EditingSession(photo=photo, inversion=inversion, edits=edits,
                             step_images=editor.render_chain(
                                 EditingSession(photo=photo, inversion=inversion), edits))
    pasted = editor.paste_back(photo, session.final_image)
    assert pasted.size == photo.original.size
    with pytest.raises(ValueError, match="inversion's files first"):
        editor.write_downloads(session, tmp_path, pasted=pasted)
    (tmp_path / "inversion").mkdir()
    session = dataclasses.replace(session, files=editor.write_inversion_files(session, tmp_path / "inversion"))
    assert sorted(path.name for path in (tmp_path / "inversion").iterdir()) == [
        "aligned.png", "pivot.npy", "tuned.safetensors"]
    (tmp_path / "first").mkdir()
    files = editor.write_downloads(session, tmp_path / "first", pasted=pasted)
    assert [path.name for path in files.paths] == ["aligned.png", "final.png", "pasted_back.png", "pivot.npy",
                                                   "tuned.safetensors", "edit_chain.json"]
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == [
        "edit_chain.json", "final.png", "pasted_back.png"]  # the inversion's files are not written again
    assert np.load(files.pivot).shape == (1, 32)
    assert '"name": "smile"' in files.chain.read_text()
    (tmp_path / "second").mkdir()
    again = editor.write_downloads(session, tmp_path / "second", pasted=None)
    assert again.pasted is None and not (tmp_path / "second" / "pasted_back.png").exists()


def test_missing_files_are_reported_and_the_rest_still_works(monkeypatch, tmp_path, landmarks_model_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    editor = FaceEditor("stylegan2-ffhq-1024", landmarks_path=landmarks_model_path)
    missing = {m.key: m for m in editor.missing_files()}
    assert set(missing) == {"stylegan2-ffhq-1024", "lpips-vgg16", "lpips-alexnet"}
    assert "stylegan2-ffhq1024x1024.pkl" in missing["stylegan2-ffhq-1024"].message
    assert all(m.needed_for == "inversion" for m in missing.values())
    assert not editor.can_invert and editor.can_align and editor.edit_options() == ()
    with pytest.raises(EditorUnavailableError, match="Inversion is not available.*stylegan2-ffhq-1024"):
        editor.estimate_seconds(QUICK)
    with pytest.raises(EditorUnavailableError):
        editor.parse_edit("interfacegan:age", 1.0)
    photo = editor.align(editor.load_photo((EXAMPLES / "astronaut.png").read_bytes()))
    assert photo.aligned.image.size == (1024, 1024)  # the size the missing generator would take


def test_landmarks_fall_back_to_the_pypi_copy(monkeypatch, tmp_path, landmarks_model_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    editor = FaceEditor("tiny", lpips_pretrained=False)
    assert editor.can_align and editor.missing_files() == ()
    assert editor.landmarks_path == landmarks_model_path
    assert "random backbone weights" in " ".join(editor.notices())


@pytest.mark.gpu
def test_on_the_gpu_the_results_come_back_on_the_cpu(landmarks_model_path):
    editor = FaceEditor("tiny", device="cuda", landmarks_path=landmarks_model_path, lpips_pretrained=False)
    photo = editor.align(editor.load_photo((EXAMPLES / "astronaut.png").read_bytes()))
    inversion = editor.invert(photo.aligned, QUICK)
    assert all(p.device.type == "cpu" for p in inversion.tuned.generator.parameters())
    assert inversion.pivot.w.device.type == "cpu"
    session = EditingSession(photo=photo, inversion=inversion)
    images = editor.render_chain(session, (editor.parse_edit("interfacegan:age", 2.0),))
    assert len(images) == 2 and images[0].size == (32, 32)
    assert all(p.device.type == "cpu" for p in inversion.tuned.generator.parameters())  # the session's copy stays
