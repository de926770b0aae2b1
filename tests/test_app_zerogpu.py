"""The app on ZeroGPU, through the real `spaces` package, on a machine without a GPU.

`tests/zerogpu_app.py` runs app.py (tiny model) in a child process with `spaces` in ZeroGPU mode against a loopback
stand-in of the device API (`zerogpu_api.FakeDeviceAPI`): every GPU call is scheduled there, runs in the worker
that `spaces` forks, with its arguments and results pickled both ways, and is released there. Only the worker's two
CUDA touches are replaced (see zerogpu_app.py). The tests run in file order against one app process: the first
needs the durations still at their prior (no inversion measured yet).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_process import running_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from tiny_e4e import save_released_layout, tiny_e4e
from zerogpu_api import FakeDeviceAPI

from pti.weights import load_generator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASTRONAUT = EXAMPLES / "astronaut.png"
GRACE_HOPPER = EXAMPLES / "grace_hopper.jpg"
SETTINGS = ("fast", 3, 2, True, 0, "w")
# The stand-in refuses longer calls, as ZeroGPU does for calls over a visitor's maximum; the app is told to ask for
# at most APP_CAP_S.
DEVICE_API_CAP_S = 120
APP_CAP_S = 200
# What the first inversion asks for, from the prior stated in pti/serving/durations.py (20 s per call, 0.05 s per
# projection step, 0.06 s per tuning step, x1.5 with the regulariser), worked out by hand for SETTINGS:
# ceil(1.5 x (20 + 3 x 0.05 + 2 x 0.06 x 1.5) + 5) = ceil(35.495).
FIRST_INVERSION_S = 36


@pytest.fixture(scope="module")
def zerogpu(tmp_path_factory, landmarks_model_path):
    """(app URL, device API stand-in, server log path): the tiny app in ZeroGPU mode, with a tiny e4e."""
    directory = tmp_path_factory.mktemp("zerogpu")
    e4e = save_released_layout(tiny_e4e(load_generator("tiny")), directory / "tiny_e4e.pt")
    cgroup = directory / "cgroup"
    cgroup.write_text("0::/loopback\n")
    log = directory / "app.log"
    with FakeDeviceAPI(max_duration_s=DEVICE_API_CAP_S) as api:
        env = {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": api.url,
               "ZEROGPU_OFFLOAD_DIR": str(directory / "offload"), "ZEROGPU_PROC_SELF_CGROUP_PATH": str(cgroup)}
        with running_app(landmarks_model_path, log, env, script="tests/zerogpu_app.py",
                         extra_args=("--e4e", str(e4e), "--zerogpu-max-seconds", str(APP_CAP_S))) as (url, _):
            yield url, api, log


def image(path: str | dict) -> np.ndarray:
    """The pixels of an output image (a path, or a gradio update / gallery item holding one)."""
    if isinstance(path, dict):
        path = path.get("value") or path.get("image")
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


def durations(api: FakeDeviceAPI) -> list[int]:
    """The GPU seconds of every scheduled call so far."""
    return [int(call.params["durationSeconds"]) for call in api.calls_to("/schedule")]


def assert_released_cleanly(api: FakeDeviceAPI) -> None:
    """Every granted call was released, none as failed."""
    releases = api.calls_to("/release")
    assert releases and all(call.params["fail"] == "false" for call in releases), releases


def test_settings_over_a_calls_limit_are_refused_with_a_message(zerogpu):
    url, api, _ = zerogpu
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        # Over the longest call the app asks for: refused here, before any scheduling. From the prior, by hand:
        # ceil(1.5 x (20 + 1000 x 0.05 + 1000 x 0.06 x 1.5) + 5) = 245 s.
        with pytest.raises(AppError, match=r"need about 245 s of GPU time, more than one ZeroGPU call may take "
                                           r"\(200 s\)"):
            client.predict("custom", 1000, 1000, True, 0, "w", api_name="/invert")
        assert api.calls_to("/schedule") == []
        # Under that but over this visitor's maximum (the stand-in's 120 s): ZeroGPU's own refusal, readable.
        # ceil(1.5 x (20 + 600 x 0.05 + 600 x 0.06) + 5) = 134 s.
        with pytest.raises(AppError, match=r"requested GPU duration \(134s\) is larger than the maximum allowed"):
            client.predict("custom", 600, 600, False, 0, "w", api_name="/invert")
        assert durations(api) == [134] and api.calls_to("/release") == []
    finally:
        client.close()


def test_align_invert_edit_and_paste_back_through_the_gpu_worker(zerogpu):
    url, api, log = zerogpu
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        status, pivot, tuned, gallery, *_ = client.predict(*SETTINGS, api_name="/invert")
        assert status.startswith("Inverted in") and image(tuned).shape == (32, 32, 3)
        assert len(gallery) == 1 and np.array_equal(image(gallery[0]), image(tuned))
        assert durations(api)[-1] == FIRST_INVERSION_S  # nothing measured yet: the prior
        assert len(api.calls_to("/allow")) >= 1  # the forked worker asked for the GPU itself

        # The e4e pivot: the encoder is loaded in the main process on the CPU, used in the worker.
        status, *_ = client.predict("fast", 3, 2, True, 0, "e4e", api_name="/invert")
        assert status.startswith("Inverted in")
        # Measured now: the tiny model's steps take milliseconds, so far less is asked for than the prior's.
        assert durations(api)[-1] < FIRST_INVERSION_S

        first = client.predict("interfacegan:age", 2.0, False, api_name="/add_edit")
        second = client.predict("interfacegan:smile", -1.5, False, api_name="/add_edit")
        assert len(first[0]) == 2 and len(second[0]) == 3 and second[4] == "2 edits in the chain."
        steps = [image(item) for item in second[0]]
        assert not np.array_equal(steps[0], steps[1]) and not np.array_equal(steps[1], steps[2])
        assert np.array_equal(steps[1], image(first[0][1]))  # the same render, in the worker both times
        removed = client.predict(0, False, api_name="/remove_edit")
        assert [item["caption"][:8] for item in removed[0]] == ["0. start", "1. Smile"]
        # A text edit: CLIP runs in this request's thread in the main process, the render in the forked worker.
        text = client.predict("a face", "a smiling face", 4.1, 0.15, False, api_name="/add_text_edit")
        assert len(text[0]) == 3 and "style channels" in text[4]
        assert not np.array_equal(image(text[0][2]), image(removed[0][1]))

        result, files = client.predict(True, api_name="/paste_back")
        original = Image.open(ASTRONAUT).convert("RGB")
        assert image(result).shape == (original.height, original.width, 3)
        assert {Path(path).name for path in files} >= {"pasted_back.png", "tuned.safetensors", "pivot.npy"}

        assert all(10 <= seconds <= DEVICE_API_CAP_S for seconds in durations(api)[1:])
        assert_released_cleanly(api)
        assert "Traceback" not in log.read_text()
    finally:
        client.close()


def test_stop_ends_the_gpu_call_within_a_step(zerogpu):
    url, api, _ = zerogpu
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(ASTRONAUT)), api_name="/align")
        scheduled = len(api.calls_to("/schedule"))
        # Long enough to stop midway. The duration asked for (1.5x the measured estimate + 5 s: 85 s for 300 + 300
        # steps on a quiet two-core box) stays under the stand-in's 120 s cap even when the box runs twice as slow.
        job = client.submit("custom", 200, 200, False, 0, "w", api_name="/invert")
        deadline = time.monotonic() + 120
        while not any("step" in str(update[0]) for update in job.outputs()):
            assert time.monotonic() < deadline, "no progress came back from the GPU worker"
            time.sleep(0.2)
        assert client.predict(api_name="/stop") == "Stopping…"
        final = job.result(timeout=120)
        assert final[0].startswith("Stopped")
        assert len(api.calls_to("/schedule")) == scheduled + 1
        assert len(api.calls_to("/release")) == len(api.calls_to("/schedule")) - 1  # all but the refused one
        assert_released_cleanly(api)
    finally:
        client.close()


def test_two_sessions_at_once_get_their_own_results(zerogpu):
    url, api, log = zerogpu

    def run(photo: Path, edit: tuple[str, float]) -> tuple:
        client = Client(url, verbose=False)
        try:
            aligned = client.predict(handle_file(str(photo)), api_name="/align")
            inverted = client.predict(*SETTINGS, api_name="/invert")
            return aligned, inverted, client.predict(*edit, False, api_name="/add_edit")
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:  # an exception in either session fails the test here
        flows = pool.map(run, (ASTRONAUT, GRACE_HOPPER), (("interfacegan:age", 2.0), ("interfacegan:smile", 1.0)))
        results = dict(zip(("astronaut", "hopper"), flows))
    faces = {name: image(aligned[0]) for name, (aligned, _, _) in results.items()}
    assert not np.array_equal(faces["astronaut"], faces["hopper"])
    starts = {name: image(added[0][0]) for name, (_, _, added) in results.items()}
    for name, (_, inverted, added) in results.items():
        # The chain starts from this session's own reconstruction (rendered again in a batch of two: within 1 level).
        assert len(added[0]) == 2 and np.abs(starts[name] - image(inverted[2])).max() <= 1
    assert np.abs(starts["astronaut"] - starts["hopper"]).max() > 10
    assert_released_cleanly(api)
    assert "Traceback" not in log.read_text()


def test_a_group_photo_through_the_gpu_worker(zerogpu, tmp_path):
    """Every face of a group photo in one GPU call (the faces and the inversions pickled both ways), the edits of
    both faces rendered in one call, the group pasted back."""
    import group_photos

    url, api, log = zerogpu
    photo = tmp_path / "group.jpg"
    group_photos.side_by_side().save(photo, quality=92)
    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(photo)), api_name="/align")
        scheduled = len(api.calls_to("/schedule"))
        status, pivots, tuned, gallery, *_ = client.predict(*SETTINGS, "all", api_name="/invert")
        assert status.startswith("Inverted all 2 faces") and image(tuned).shape == (32, 64, 3)
        assert len(api.calls_to("/schedule")) == scheduled + 1  # one GPU call for both faces
        every = client.predict("interfacegan:age", 2.0, False, -1, api_name="/add_edit")
        assert every[4] == "Every face: 1 edit." and len(api.calls_to("/schedule")) == scheduled + 2
        assert all(not np.array_equal(image(after), image(before)) for after, before in zip(every[0], gallery))
        result, files = client.predict(True, -1, api_name="/paste_back")
        assert image(result).shape[:2] == image(str(photo)).shape[:2]
        assert "group.zip" in {Path(path).name for path in files}
        assert_released_cleanly(api)
        assert "Traceback" not in log.read_text()
    finally:
        client.close()
