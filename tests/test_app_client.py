"""The app through `gradio_client`: launched here on a free local port with the tiny model, offline.

Every output of the flow photo -> aligned face -> PTI -> two edits -> paste-back is checked, two clients run at
once without mixing, and bad inputs come back as readable messages (no traceback, no server path).
"""
from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from app_in_process import launch
from app_process import free_port
from fetched_files import Fetched, fetch_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from hub_server import FakeHub
from test_oracles import package_lpips
from PIL import Image
from tiny_e4e import save_released_layout, tiny_e4e

import app
from pti.images import pil_to_tensor, tensor_to_pil
from pti.tuning import TunedGenerator
from pti.generator_io import load_generator_file
from pti.weights import load_generator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASTRONAUT = EXAMPLES / "astronaut.png"
GRACE_HOPPER = EXAMPLES / "grace_hopper.jpg"
# Few steps: enough to exercise both phases, fast on two CPU cores.
SETTINGS = ("fast", 3, 2, True, 0, "w")
QUICK_SETTINGS = ("fast", 2, 1, False, 0, "w")  # where the inversion only has to exist
MAX_UPLOAD = "1mb"
ALIGNS_PER_CLIENT = 3  # per client, when ten align the same photo at once


@pytest.fixture(scope="module")
def e4e_checkpoint(tmp_path_factory) -> Path:
    """A tiny e4e for the tiny model (8 x 32 W+ codes, random weights) in the layout of e4e_ffhq_encode.pt."""
    path = tmp_path_factory.mktemp("e4e") / "tiny_e4e.pt"
    yield save_released_layout(tiny_e4e(load_generator("tiny")), path)
    path.unlink()


@pytest.fixture(scope="module")
def tiny_options(landmarks_model_path, e4e_checkpoint) -> app.AppOptions:
    """The tiny model offline: explicit landmark file, random LPIPS backbones, a tiny e4e, a 1 MB upload limit."""
    return app.AppOptions(model="tiny", device="cpu", host="127.0.0.1", port=free_port(), max_sessions=8,
                          max_file_size=MAX_UPLOAD, landmarks=str(landmarks_model_path), lpips="random",
                          e4e=str(e4e_checkpoint))


@pytest.fixture(scope="module")
def editor(tiny_options):
    """The tiny-model editor, loaded once for every app in this module."""
    return app.load_editor(tiny_options)


@pytest.fixture(scope="module")
def served(editor, tiny_options):
    """The app serving on a free port: (url, its session store)."""
    store = app.session_store(tiny_options)
    demo, url = launch(editor, tiny_options, store)
    yield url, store
    demo.close()


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[0]


def image(path: str | dict) -> Image.Image:
    """A fetched output image (path, or a gradio update/gallery dict holding one)."""
    if isinstance(path, dict):
        path = path.get("value") or path.get("image")
    with Image.open(path) as opened:
        return opened.convert("RGB")


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


def run_flow(url: str, photo: Path, edits: list[tuple[str, float]]) -> dict:
    """Align, invert and add `edits` through one client; returns every output by name."""
    client = Client(url, verbose=False)
    try:
        aligned = client.predict(handle_file(str(photo)), api_name="/align")
        inverted = client.predict(*SETTINGS, api_name="/invert")
        added = [client.predict(key, strength, False, api_name="/add_edit") for key, strength in edits]
        return {"aligned": aligned, "inverted": inverted, "added": added, "client": client}
    except Exception:
        client.close()
        raise


def wait_for(condition, what: str, timeout: float = 240.0, poll: float = 0.1) -> None:
    """Wait until `condition()` holds; fail loudly, saying what did not happen, after a generous `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)


def started(job) -> bool:
    """Whether an inversion job has reported a step."""
    return any("step" in str(update[0]) for update in job.outputs())


def assert_reported_metrics_are_the_images(status, pivot, tuned, aligned, files, editor):
    """The LPIPS and MSE in the status line and the labels, recomputed with the lpips package's LPIPS from the
    renderings of the downloaded pivot (original generator) and tuned weights (they are the images shown, before
    rounding to PNG) against the aligned face at the generator's size."""
    numbers = re.search(r"pivot ([\d.]+) / ([\d.]+), PTI ([\d.]+) / ([\d.]+)", status)
    assert numbers, status
    reported = {"pivot": tuple(map(float, numbers.group(1, 2))), "tuned": tuple(map(float, numbers.group(3, 4)))}
    by_name = {Path(path).name: Path(path) for path in files}
    ws = torch.from_numpy(np.load(by_name["pivot.npy"]))[:, None].repeat(1, 8, 1)
    generators = {"pivot": load_generator("tiny"), "tuned": load_generator_file(by_name["tuned.safetensors"])}
    network = package_lpips(editor._require_pipeline().lpips_alex)
    target = pil_to_tensor(aligned, size=32)
    recomputed = {}
    for name, shown in (("pivot", pivot), ("tuned", tuned)):
        with torch.no_grad():
            rendering = generators[name].synthesis(ws, noise_mode="const", force_fp32=True)
        assert np.array_equal(pixels(tensor_to_pil(rendering)[0]), pixels(image(shown)))
        recomputed[name] = (network(rendering, target).item(), float(((rendering - target) ** 2).mean()))
        assert reported[name][0] == pytest.approx(recomputed[name][0], abs=6e-4), (name, reported, recomputed)
        assert reported[name][1] == pytest.approx(recomputed[name][1], abs=6e-5), (name, reported, recomputed)
        assert f"LPIPS {reported[name][0]:.3f} · MSE {reported[name][1]:.4f}" in shown["label"]
    assert abs(recomputed["pivot"][0] - recomputed["tuned"][0]) > 2e-3  # a swap of the two would show


def test_photo_to_pasted_back_through_the_client(url, editor):
    flow = run_flow(url, ASTRONAUT, [("interfacegan:age", 2.0), ("interfacegan:smile", -1.5)])
    client = flow["client"]
    try:
        # Alignment: the state, the aligned face (256 px for the 32 px model), the face picker, a status line.
        aligned_path, face_picker, status, *_ = flow["aligned"]
        aligned = image(aligned_path)
        assert aligned.size == (256, 256)
        expected = editor.align(editor.load_photo(ASTRONAUT.read_bytes())).aligned.image
        assert np.array_equal(pixels(aligned), pixels(expected))  # PNG all the way: the exact aligned face
        assert "1 face found" in status

        # Inversion: status with the metrics, pivot and PTI reconstructions at the generator's 32 px.
        status, pivot, tuned, gallery, _, result, files = flow["inverted"]
        assert "Inverted in" in status and "LPIPS" in status and "MSE" in status
        assert image(pivot).size == (32, 32) and image(tuned).size == (32, 32)
        assert "LPIPS" in pivot["label"] and "MSE" in tuned["label"]
        assert_reported_metrics_are_the_images(status, pivot, tuned, aligned, files, editor)
        assert [item["caption"] for item in gallery] == ["0. start: PTI reconstruction"]
        assert np.array_equal(pixels(image(gallery[0])), pixels(image(tuned)))

        # Two edits in sequence: three steps, each different from the one before, captions in order.
        first, second = flow["added"]
        assert len(first[0]) == 2 and len(second[0]) == 3
        captions = [item["caption"] for item in second[0]]
        assert captions[1].startswith("1. Age") and captions[1].endswith("+2 · InterfaceGAN")
        assert captions[2].startswith("2. Smile") and captions[2].endswith("-1.5 · InterfaceGAN")
        steps = [pixels(image(item)) for item in second[0]]
        assert all(step.shape == (32, 32, 3) for step in steps)
        assert not np.array_equal(steps[0], steps[1]) and not np.array_equal(steps[1], steps[2])
        assert np.array_equal(steps[1], pixels(image(first[0][1])))  # adding an edit keeps the earlier steps
        assert second[4] == "2 edits in the chain."
        assert np.array_equal(pixels(image(second[2])), steps[2])  # the result is the last step

        # Failed edits say why and keep the chain and the result as they were.
        with pytest.raises(AppError, match=r"strength 5 is outside the allowed range \[-3, 3\]") as raised:
            client.predict("interfacegan:age", 5.0, False, api_name="/add_edit")
        assert_readable(str(raised.value))
        with pytest.raises(AppError, match="not in the list of choices"):
            client.predict("interfacegan:baldness", 1.0, False, api_name="/add_edit")
        with pytest.raises(AppError, match=r"Value: 5 is not in the list of choices: \[0, 1\]"):
            client.predict(5, False, api_name="/remove_edit")
        unchanged, _ = client.predict(False, api_name="/paste_back")
        assert np.array_equal(pixels(image(unchanged)), steps[2])

        # Paste-back: the original photo's size, unchanged away from the face, changed on it.
        result, files = client.predict(True, api_name="/paste_back")
        pasted = image(result)
        original = Image.open(ASTRONAUT).convert("RGB")
        assert result["label"] == "Pasted back into the photo" and pasted.size == original.size
        difference = np.abs(pixels(pasted) - pixels(original)).sum(axis=2)
        assert difference[:40, :40].max() == 0  # a corner far from the face is untouched
        assert difference[150:300, 200:320].mean() > 5  # the face region changed

        # Downloads: every file, with the right content.
        by_name = {Path(path).name: Path(path) for path in files}
        assert sorted(by_name) == sorted(["aligned.png", "final.png", "pasted_back.png", "pivot.npy",
                                          "tuned.safetensors", "edit_chain.json"])
        chain = json.loads(by_name["edit_chain.json"].read_text())
        assert [(e["kind"], e["name"], e["strength"]) for e in chain["edits"]] == [
            ("interfacegan", "age", 2.0), ("interfacegan", "smile", -1.5)]
        assert np.load(by_name["pivot.npy"]).shape == (1, 32)
        assert np.array_equal(pixels(image(by_name["final.png"])), steps[2])
        assert image(by_name["pasted_back.png"]).size == original.size

        # Remove the first edit (the smile is then applied to the start), then clear the chain.
        removed = client.predict(0, True, api_name="/remove_edit")
        assert [item["caption"][:8] for item in removed[0]] == ["0. start", "1. Smile"]
        assert not np.array_equal(pixels(image(removed[0][1])), steps[2])
        cleared = client.predict(True, api_name="/clear_edits")
        assert len(cleared[0]) == 1 and cleared[4] == "Chain cleared."
        without_paste = client.predict(False, api_name="/paste_back")
        assert np.array_equal(pixels(image(without_paste[0])), steps[0])
        assert "pasted_back.png" not in {Path(path).name for path in without_paste[1]}
    finally:
        client.close()


def pivot_radio(url: str) -> dict:
    """The props of the pivot choice in the page's config."""
    components = httpx.get(f"{url}config").json()["components"]
    return next(c["props"] for c in components if c.get("props", {}).get("elem_id") == "pivot-choice")


def test_the_e4e_pivot_is_offered_preselected_on_the_cpu_and_works(url):
    radio = pivot_radio(url)
    assert radio["visible"] is True and radio["value"] == "e4e"  # on a CPU, e4e is preselected, and says why
    assert [value for _, value in radio["choices"]] == ["w", "e4e"]
    assert "e4e encoder (one pass; fast, best for StyleCLIP edits)" in [label for label, _ in radio["choices"]]
    assert "because this runs on a CPU" in radio["info"] and "trained on e4e codes" in radio["info"]
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        status, pivot, tuned, gallery, _, _, files = client.predict("fast", 3, 2, True, 0, "e4e", api_name="/invert")
        assert "Inverted in" in status and image(pivot).size == image(tuned).size == (32, 32)
        by_name = {Path(path).name: Path(path) for path in files}
        assert np.load(by_name["pivot.npy"]).shape == (1, 8, 32)  # the e4e's W+ code, one per layer
        assert len(client.predict("styleclip:demo_1", 0.1, False, api_name="/add_edit")[0]) == 2
    finally:
        client.close()


def test_an_e4e_that_fails_to_load_is_told_and_the_session_kept(editor, tiny_options, tmp_path):
    broken = tmp_path / "e4e_ffhq_encode.pt"
    broken.write_bytes(b"half a download")
    options = app.AppOptions(**{**tiny_options.__dict__, "port": free_port(), "e4e": str(broken)})
    demo, url = launch(app.load_editor(options), options)
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        client.predict(*QUICK_SETTINGS, api_name="/invert")
        before = client.predict("interfacegan:age", 1.0, False, api_name="/add_edit")
        with pytest.raises(AppError, match="The e4e encoder could not be loaded, so the e4e pivot is not "
                                           r"available \(the W projection pivot still is\)") as raised:
            client.predict("fast", 2, 1, False, 0, "e4e", api_name="/invert")
        assert "e4e_ffhq_encode.pt is not a readable torch checkpoint" in str(raised.value)
        assert_readable(str(raised.value))
        after = client.predict("interfacegan:smile", 1.0, False, api_name="/add_edit")  # the session is intact
        assert len(after[0]) == 3 and np.array_equal(pixels(image(after[0][1])), pixels(image(before[0][1])))
    finally:
        client.close()
        demo.close()


def test_two_clients_at_once_keep_their_own_sessions(url, tmp_path):
    flows: dict[str, dict] = {}
    errors: list[BaseException] = []

    def run(name: str, photo: Path, edit: tuple[str, float]) -> None:
        try:
            flows[name] = run_flow(url, photo, [edit])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=("astronaut", ASTRONAUT, ("interfacegan:age", 2.0))),
               threading.Thread(target=run, args=("hopper", GRACE_HOPPER, ("interfacegan:smile", 1.0)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    try:
        aligned = {name: pixels(image(flow["aligned"][0])) for name, flow in flows.items()}
        assert not np.array_equal(aligned["astronaut"], aligned["hopper"])
        for name, flow in flows.items():
            gallery, _, _, files, _ = flow["added"][0]
            by_name = {Path(path).name: Path(path) for path in files}
            # The session's downloads are its own: its aligned face, and a tuned generator and pivot that
            # redraw its own reconstruction and edit.
            assert np.array_equal(pixels(image(by_name["aligned.png"])), aligned[name])
            saved = tmp_path / name
            saved.mkdir()
            for file_name in ("tuned.safetensors", "pivot.npy"):
                shutil.copy(by_name[file_name], saved / file_name)
            tuned = TunedGenerator.load(saved)
            pivot = torch.from_numpy(np.load(by_name["pivot.npy"]))
            redrawn = pixels(tensor_to_pil(tuned.render(pivot))[0])
            assert np.abs(redrawn - pixels(image(gallery[0]))).max() <= 1
            assert json.loads(by_name["edit_chain.json"].read_text())["edits"][0]["name"] == (
                "age" if name == "astronaut" else "smile")
        tuned_a = pixels(image(flows["astronaut"]["added"][0][0][0]))
        tuned_b = pixels(image(flows["hopper"]["added"][0][0][0]))
        assert not np.array_equal(tuned_a, tuned_b)
    finally:
        for flow in flows.values():
            flow["client"].close()


def test_a_photo_with_two_faces_offers_the_other_one(url, tmp_path):
    both = tmp_path / "two_people.png"
    left, right = Image.open(ASTRONAUT).convert("RGB"), Image.open(GRACE_HOPPER).convert("RGB")
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (128, 128, 128))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    canvas.save(both)
    client = Client(url, verbose=False)
    try:
        first, picker, status, *_ = client.predict(handle_file(str(both)), api_name="/align")
        values = [value for _, value in picker["choices"]]
        assert picker["visible"] is True and len(values) >= 2 and values == list(range(len(values)))
        assert picker["value"] == 0 and f"{len(values)} faces found" in status
        second, _, _, *_ = client.predict(1, api_name="/choose_face")
        assert not np.array_equal(pixels(image(first)), pixels(image(second)))
        # Inverting now inverts the chosen face: its aligned image is in the downloads, the metrics are against it.
        status, _, _, _, _, _, files = client.predict(*QUICK_SETTINGS, api_name="/invert")
        by_name = {Path(path).name: Path(path) for path in files}
        assert np.array_equal(pixels(image(by_name["aligned.png"])), pixels(image(second)))
        mse = float(re.search(r"PTI [\d.]+ / ([\d.]+)", status).group(1))
        with torch.no_grad():
            tuned = load_generator_file(by_name["tuned.safetensors"])
            ws = torch.from_numpy(np.load(by_name["pivot.npy"]))[:, None].repeat(1, 8, 1)
            rendering = tuned.synthesis(ws, noise_mode="const", force_fp32=True)
        errors = {name: float(((rendering - pil_to_tensor(image(face), size=32)) ** 2).mean())
                  for name, face in (("first", first), ("second", second))}
        assert mse == pytest.approx(errors["second"], abs=6e-5) and abs(errors["first"] - errors["second"]) > 1e-3
    finally:
        client.close()


def assert_readable(message: str) -> None:
    """A message for people: no traceback, no server path."""
    assert "Traceback" not in message and "/tmp" not in message and "site-packages" not in message


@pytest.fixture()
def bad_files(tmp_path):
    """A photo without a face, a text file, a truncated PNG and a file over the upload limit."""
    from skimage import data

    no_face = tmp_path / "camera.png"
    Image.fromarray(data.camera()).save(no_face)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"these are my notes, saved with the wrong name\n" * 20)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(ASTRONAUT.read_bytes()[:20_000])
    oversized = tmp_path / "huge.png"
    oversized.write_bytes(np.random.default_rng(0).integers(0, 256, 2 * 1024 * 1024, dtype=np.uint8).tobytes())
    return {"no_face": no_face, "not_an_image": not_an_image, "truncated": truncated, "oversized": oversized}


@pytest.mark.parametrize("kind, expected", [
    ("no_face", "no face was found in the image"),
    ("not_an_image", "not an image in a supported format"),
    ("truncated", "truncated or corrupt"),
])
def test_bad_photos_get_readable_messages(url, bad_files, kind, expected):
    client = Client(url, verbose=False)
    try:
        with pytest.raises(AppError) as raised:
            client.predict(handle_file(str(bad_files[kind])), api_name="/align")
        assert expected in str(raised.value)
        assert_readable(str(raised.value))
    finally:
        client.close()


def test_oversized_upload_is_refused_with_the_limit(url, bad_files):
    client = Client(url, verbose=False)
    try:
        with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
            client.predict(handle_file(str(bad_files["oversized"])), api_name="/align")
    finally:
        client.close()
    # The server enforces the limit too, not only the client.
    with bad_files["oversized"].open("rb") as file:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("huge.png", file, "image/png")})
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_each_step_asks_for_the_one_before(url):
    client = Client(url, verbose=False)
    try:
        with pytest.raises(AppError, match="Give a photo first"):
            client.predict(*SETTINGS, api_name="/invert")
        with pytest.raises(AppError, match=r"not in the list of choices: \[\]"):  # no steps to pick from
            client.predict(0, False, api_name="/remove_edit")
        for arguments, endpoint in ((("interfacegan:age", 1.0, False), "/add_edit"), ((False,), "/clear_edits"),
                                    ((True,), "/paste_back")):
            with pytest.raises(AppError, match=r"Invert the face first \(press Invert\)"):
                client.predict(*arguments, api_name=endpoint)
    finally:
        client.close()


def test_stop_cancels_a_running_inversion(url):
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        job = client.submit("custom", 1000, 1000, True, 0, "w", api_name="/invert")
        wait_for(lambda: started(job), "the inversion's first step")
        assert client.predict(api_name="/stop") == "Stopping…"
        final = job.result(timeout=240)
        assert final[0].startswith("Stopped")
        # Stopped in the projection, long before its 1000 steps (a run that ignored Stop would finish both phases).
        last = [str(update[0]) for update in job.outputs() if "step" in str(update[0])][-1]
        assert "Projection" in last and int(re.search(r"step (\d+)/1000", last).group(1)) < 1000, last
        with pytest.raises(AppError, match="Invert the face first"):  # nothing half-tuned was kept
            client.predict("interfacegan:age", 1.0, False, api_name="/add_edit")
        assert client.predict(api_name="/stop") == "Nothing is running."
    finally:
        client.close()


def test_sessions_over_memory_wait_on_disk_and_come_back(editor, tiny_options):
    options = app.AppOptions(**{**tiny_options.__dict__, "port": free_port(), "max_sessions": 1})
    store = app.session_store(options)
    demo, url = launch(editor, options, store)
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    try:
        inverted = {}
        for name, client in (("first", first), ("second", second)):
            client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
            inverted[name] = client.predict(*QUICK_SETTINGS, api_name="/invert")
        assert len(store) == 1 and store.parked_sessions == 1  # the first session's generator went to disk
        # It comes back on its next edit, with its own reconstruction as the chain's start.
        gallery = first.predict("interfacegan:age", 1.0, False, api_name="/add_edit")[0]
        assert len(gallery) == 2 and np.array_equal(pixels(image(gallery[0])), pixels(image(inverted["first"][2])))
        assert store.parked_sessions == 1  # now the second one waits on disk
        assert len(second.predict("interfacegan:age", 1.0, False, api_name="/add_edit")[0]) == 2
    finally:
        first.close()
        second.close()
        demo.close()
    store.clear()


def test_stop_gets_through_when_the_queue_is_full(editor, tiny_options):
    options = app.AppOptions(**{**tiny_options.__dict__, "port": free_port(), "queue_size": 1})
    demo, url = launch(editor, options)
    running, waiting = Client(url, verbose=False), Client(url, verbose=False)
    try:
        for client in (running, waiting):
            client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        job = running.submit("custom", 1000, 1000, False, 0, "w", api_name="/invert")
        wait_for(lambda: started(job), "the first inversion's first step")
        queued = waiting.submit("custom", 1000, 1000, False, 0, "w", api_name="/invert")  # fills the queue
        wait_for(lambda: queued.status().code.name in ("IN_QUEUE", "QUEUE_FULL"), "the second inversion queueing")
        with pytest.raises(QueueError):  # gradio_client sends every call through the queue, which is full...
            running.predict(api_name="/stop")
        # ...but Stop runs outside it: as the page sends it (POST .../api/stop with the session), it gets through.
        answer = httpx.post(f"{url}gradio_api/api/stop/", json={"data": [], "session_hash": running.session_hash},
                            timeout=30)
        assert answer.status_code == 200 and answer.json()["data"] == ["Stopping…"]
        assert job.result(timeout=240)[0].startswith("Stopped")
        wait_for(lambda: started(queued), "the queued inversion starting")  # the waiting one runs now
        assert waiting.predict(api_name="/stop") == "Stopping…"
        assert queued.result(timeout=240)[0].startswith("Stopped")
    finally:
        running.close()
        waiting.close()
        demo.close()


class HeldInversions:
    """Holds every inversion at its start (inside the app's handler, so in one of its concurrency places) until the
    test lets them go; counts those that came in. Nothing depends on how fast the machine is."""

    def __init__(self, editor) -> None:
        self._invert_steps = editor.invert_steps
        self._lock = threading.Lock()
        self.entered = 0
        self.released = threading.Event()

    def invert_steps(self, aligned_face, settings):
        with self._lock:
            self.entered += 1
        if not self.released.wait(timeout=600):  # a test that failed before releasing them: end, do not hang
            raise RuntimeError("the held inversion was never released")
        yield from self._invert_steps(aligned_face, settings)


def test_concurrency_runs_jobs_side_by_side_and_a_full_queue_refuses_more(editor, tiny_options, monkeypatch):
    """--concurrency 2: two inversions run at once; --queue-size 1: a third waits, a fourth is refused."""
    options = app.parse_args(["--model", "tiny", "--device", "cpu", "--host", "127.0.0.1", "--port",
                              str(free_port()), "--concurrency", "2", "--queue-size", "1"])
    assert (options.concurrency, options.queue_size) == (2, 1)
    held = HeldInversions(editor)
    monkeypatch.setattr(editor, "invert_steps", held.invert_steps)
    demo, url = launch(editor, options)
    clients = [Client(url, verbose=False) for _ in range(4)]
    try:
        for client in clients[:3]:
            client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        jobs = [client.submit(*QUICK_SETTINGS, api_name="/invert") for client in clients[:2]]
        wait_for(lambda: held.entered == 2, "two inversions running at once")  # with one place: never
        waiting = clients[2].submit(*QUICK_SETTINGS, api_name="/invert")
        wait_for(lambda: waiting.status().code.name == "IN_QUEUE", "the third inversion queueing")
        refused = clients[3].submit(*QUICK_SETTINGS, api_name="/invert")
        wait_for(lambda: refused.done() or refused.status().code.name in ("IN_QUEUE", "PROCESSING"),
                 "the server's answer to a fourth inversion")
        assert refused.done(), f"a fourth inversion was taken though the queue of 1 was full: {refused.status()}"
        with pytest.raises(QueueError, match="(?i)queue is full"):
            refused.result(timeout=60)
        assert held.entered == 2 and waiting.status().code.name == "IN_QUEUE"  # both places still taken
        held.released.set()
        for job in (*jobs, waiting):  # the queued one runs once a place is free
            assert job.result(timeout=240)[0].startswith("Inverted in")
        assert held.entered == 3
    finally:
        held.released.set()
        for client in clients:
            client.close()
        demo.close()


def test_a_session_over_the_memory_budget_is_refused_with_the_budget(editor, tiny_options, tmp_path):
    """--max-session-mb 1 and a photo of over 1 MiB: the inversion is refused with a readable message."""
    options = app.parse_args(["--model", "tiny", "--device", "cpu", "--host", "127.0.0.1", "--port",
                              str(free_port()), "--max-session-mb", "1", "--max-file-size", "20mb"])
    big = tmp_path / "big.png"
    canvas = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1100, 1100, 3), dtype=np.uint8))
    canvas.paste(Image.open(ASTRONAUT).convert("RGB"), (300, 300))
    canvas.save(big)
    assert big.stat().st_size > 1024 ** 2
    store = app.session_store(options)
    demo, url = launch(editor, options, store)
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(big)), api_name="/align")
        with pytest.raises(AppError, match=r"this session needs [\d.]+ MiB, more than the server's whole budget "
                                           r"of 1(\.0)? MiB for sessions") as raised:
            client.predict(*QUICK_SETTINGS, api_name="/invert")
        assert_readable(str(raised.value))
        assert len(store) == 0
        with pytest.raises(AppError, match="Invert the face first"):
            client.predict("interfacegan:age", 1.0, False, api_name="/add_edit")
    finally:
        client.close()
        demo.close()


def test_evicted_session_is_told_and_closed_tabs_are_freed(editor, tiny_options):
    options = app.AppOptions(**{**tiny_options.__dict__, "port": free_port(), "max_sessions": 1,
                                "max_session_disk_gb": 0})
    store = app.session_store(options)
    demo, url = launch(editor, options, store)
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    try:
        for client in (first, second):
            client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
            client.predict(*QUICK_SETTINGS, api_name="/invert")
        assert len(store) == 1
        with pytest.raises(AppError, match="freed to make room for other people"):
            first.predict("interfacegan:age", 1.0, False, api_name="/add_edit")
        assert len(second.predict("interfacegan:age", 1.0, False, api_name="/add_edit")[0]) == 2
        second.close()  # the browser tab closes: demo.unload frees the session
        wait_for(lambda: len(store) == 0, "the closed tab's session being freed")
    finally:
        first.close()
        demo.close()


def test_app_starts_without_the_default_model_and_says_what_is_missing(monkeypatch, tmp_path, landmarks_model_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    options = app.AppOptions(host="127.0.0.1", port=free_port(), landmarks=str(landmarks_model_path))
    editor = app.load_editor(options)
    assert {m.key for m in editor.missing_files()} == {"stylegan2-ffhq-1024", "lpips-vgg16", "lpips-alexnet"}
    demo, url = launch(editor, options)
    client = Client(url, verbose=False)
    try:
        config = httpx.get(f"{url}config").json()
        texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
        assert "Some pretrained files are missing" in texts and "--model tiny" in texts
        assert "stylegan2-ffhq1024x1024.pkl" in texts and "PTI_WEIGHTS_DIR" in texts
        # Alignment still works; inversion says why it cannot run.
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        with pytest.raises(AppError, match="Inversion is not available because pretrained files are missing"):
            client.predict(*QUICK_SETTINGS, api_name="/invert")
    finally:
        client.close()
        demo.close()


def test_an_unreachable_hub_switches_to_cached_files_at_start(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # both restored after the test
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with FakeHub() as hub:
        assert not app.offline_if_the_hub_is_unreachable(hub.url)  # reachable: stays online
    assert not constants.HF_HUB_OFFLINE
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert app.offline_if_the_hub_is_unreachable(unreachable)
    assert constants.HF_HUB_OFFLINE and not app.offline_if_the_hub_is_unreachable(unreachable)  # already offline


def test_flags_default_to_environment_variables(monkeypatch):
    monkeypatch.setenv("PTI_MODEL", "tiny")
    monkeypatch.setenv("PTI_CONCURRENCY", "2")
    monkeypatch.setenv("PTI_SHARE", "1")
    monkeypatch.setenv("PTI_E4E", "/models/e4e_ffhq_encode.pt")
    monkeypatch.setenv("PTI_APPROXIMATE", "1")
    options = app.parse_args(["--port", "7000", "--max-sessions", "3"])
    assert options.approximate is True
    assert (options.model, options.concurrency, options.share, options.port, options.max_sessions) == (
        "tiny", 2, True, 7000, 3)
    assert options.e4e == "/models/e4e_ffhq_encode.pt"
    assert app.parse_args(["--model", "stylegan2-ffhq-512"]).model == "stylegan2-ffhq-512"  # a flag wins
    monkeypatch.delenv("PTI_SHARE")
    monkeypatch.delenv("PTI_APPROXIMATE")
    defaults = app.parse_args([])
    assert (defaults.share, defaults.host, defaults.device, defaults.queue_size) == (False, None, "auto", 16)
    assert defaults.approximate is False and app.parse_args(["--approximate"]).approximate is True
    with pytest.raises(SystemExit):
        app.parse_args(["--concurrency", "0"])


def test_the_approximate_flag_reaches_the_editor(editor, tiny_options):
    assert editor.approximate is False
    options = app.AppOptions(**{**tiny_options.__dict__, "approximate": True})
    assert app.load_editor(options).approximate is True


def test_messages_for_people_name_files_not_server_paths():
    from alignment import LandmarkModelError

    error = LandmarkModelError("/srv/cache/models/landmarks.dat is not dlib's shape_predictor_68_face_landmarks.dat")
    assert app.readable_message(error) == "landmarks.dat is not dlib's shape_predictor_68_face_landmarks.dat"
    unexpected = app.readable_message(KeyError("/srv/secret/thing"))
    assert unexpected == "Something went wrong on the server (KeyError); it has been logged."


def test_ten_clients_aligning_the_same_photo_get_every_file_whole(url):
    # Everyone who clicks an example returns the same aligned face, so Gradio caches it under one path: with its
    # stock in-place rewrite some downloads were cut (tests/test_gradio_cache.py); here none may be.
    fetched: list[Fetched] = []
    errors: list[BaseException] = []

    def align_and_fetch() -> None:
        client = Client(url, verbose=False, download_files=False)
        try:
            with httpx.Client() as http:
                for _ in range(ALIGNS_PER_CLIENT):
                    outputs = client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
                    files = [output for output in outputs if isinstance(output, dict) and output.get("url")]
                    fetched.extend(fetch_image(http, output["url"]) for output in files)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=align_and_fetch) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(fetched) == 10 * ALIGNS_PER_CLIENT  # the aligned face of every alignment
    assert [f for f in fetched if f.cut] == []
