"""pti.serving: the durations asked of ZeroGPU, ZeroGPU detection and the decorator, errors carried out of GPU calls."""
from __future__ import annotations

import gc
import importlib.machinery
import multiprocessing
import sys
import types

import pytest
import torch

from pti.serving import gpu_calls, hardware, zerogpu
from pti.serving.durations import Estimate, GpuDurations, InversionTimings, StepSeconds

PRIOR = StepSeconds(setup=10.0, projection_step=0.1, e4e_pivot=3.0, tuning_step=0.2, locality_factor=2.0,
                    render_setup=4.0, render_image=0.5)


def test_the_prior_gives_the_first_estimates():
    durations = GpuDurations(PRIOR, max_seconds=300)
    # 10 + 100 x 0.1 + 50 x 0.2 x 2 (regulariser on)
    assert durations.inversion(projection_steps=100, tuning_steps=50, locality=True, pivot="w") == Estimate(40.0, False)
    # 10 + the e4e pass 3 + 50 x 0.2: the projection steps do not count for an e4e pivot
    assert durations.inversion(projection_steps=100, tuning_steps=50, locality=False, pivot="e4e") == \
        Estimate(23.0, False)
    assert durations.render(3) == Estimate(5.5, False)


def test_requested_seconds_have_a_margin_and_bounds():
    durations = GpuDurations(PRIOR, max_seconds=120)
    assert durations.wanted(Estimate(40.0, True)) == 65  # ceil(1.5 x 40 + 5)
    assert durations.requested(Estimate(40.0, True)) == 65
    assert durations.requested(Estimate(0.5, True)) == 10  # never under 10 s
    assert durations.requested(Estimate(100.0, True)) == 120  # never over the cap
    with pytest.raises(ValueError, match="at least 10"):
        GpuDurations(PRIOR, max_seconds=5)


def test_measured_inversions_replace_the_prior():
    durations = GpuDurations(PRIOR)
    durations.record_inversion(InversionTimings(setup=2.0, pivot=1.5, projection_steps=30, tuning=3.0,
                                                tuning_steps=20, locality=True))
    times = durations.step_seconds
    assert (times.setup, times.projection_step) == (2.0, 0.05)
    # Only regularised steps measured so far: the plain step is inferred with the prior's factor (0.15 / 2).
    assert times.tuning_step == pytest.approx(0.075) and times.locality_factor == 2.0
    durations.record_inversion(InversionTimings(setup=1.0, pivot=0.6, projection_steps=0, tuning=1.0,
                                                tuning_steps=10, locality=False))
    times = durations.step_seconds
    # An e4e pivot measures the encoder pass, keeps the projection step; both tuning kinds measured: their ratio.
    assert (times.setup, times.e4e_pivot, times.projection_step) == (1.0, 0.6, 0.05)
    assert times.tuning_step == pytest.approx(0.1) and times.locality_factor == pytest.approx(1.5)
    estimate = durations.inversion(projection_steps=100, tuning_steps=10, locality=True, pivot="w")
    assert estimate.measured and estimate.seconds == pytest.approx(1.0 + 5.0 + 10 * 0.15)
    with pytest.raises(ValueError, match="non-negative"):
        InversionTimings(setup=-1.0, pivot=0.0, projection_steps=0, tuning=0.0, tuning_steps=0, locality=False)


def test_a_measured_render_scales_the_render_times():
    durations = GpuDurations(PRIOR)
    durations.record_render(1.0, 2)  # the prior said 4 + 2 x 0.5 = 5 s: everything a fifth
    assert durations.render(2) == Estimate(pytest.approx(1.0), True)
    assert durations.render(4).seconds == pytest.approx(0.8 + 4 * 0.1)
    with pytest.raises(ValueError):
        durations.record_render(1.0, 0)


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("True", True), ("", False),
                                             ("false", False), ("0", False)])
def test_zerogpu_is_recognised_by_its_environment_variable(monkeypatch, value, expected):
    monkeypatch.setenv(zerogpu.ZEROGPU_ENV_VAR, value)
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: object() if name == "spaces" else None)
    assert zerogpu.on_zerogpu() is expected


def test_without_spaces_there_is_no_zerogpu(monkeypatch):
    monkeypatch.setenv(zerogpu.ZEROGPU_ENV_VAR, "true")
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: None)
    assert not zerogpu.on_zerogpu()


def test_gpu_task_is_a_no_op_off_zerogpu(monkeypatch):
    monkeypatch.delenv(zerogpu.ZEROGPU_ENV_VAR, raising=False)

    def work(x):
        return x + 1

    assert zerogpu.gpu_task(duration=10)(work) is work
    assert zerogpu.gpu_call_device(zerogpu.torch.device("cpu")).type == "cpu"


def test_gpu_task_is_spaces_gpu_on_zerogpu(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)

    def fake_gpu(*, duration):
        calls.append(duration)
        return lambda function: ("wrapped", function)

    fake.GPU = fake_gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv(zerogpu.ZEROGPU_ENV_VAR, "true")
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: fake.__spec__)

    def work(x):
        return x

    def duration(x):
        return 12

    assert zerogpu.gpu_task(duration=duration)(work) == ("wrapped", work)
    assert calls == [duration]


def across_a_queue(value):
    """`value` after a trip through a fork-context SimpleQueue, the way `spaces` sends a GPU function's results."""
    queue = multiprocessing.get_context("fork").SimpleQueue()
    queue.put(value)
    return queue.get()


class _Unpicklable(Exception):
    """An error whose constructor takes two arguments: it pickles, but does not unpickle."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def test_errors_come_out_of_gpu_calls_as_themselves():
    try:
        raise KeyError("missing")
    except KeyError as error:
        failure = gpu_calls.as_failure(error)
    carried = across_a_queue(failure)
    with pytest.raises(KeyError, match="missing") as raised:
        gpu_calls.checked(carried)
    assert "raised in a GPU function" in raised.value.__notes__[0] and "KeyError" in raised.value.__notes__[0]
    assert gpu_calls.checked(5) == 5


def test_errors_that_do_not_pickle_come_out_as_gpu_call_errors():
    failure = gpu_calls.as_failure(_Unpicklable(1, 2))
    carried = across_a_queue(failure)
    with pytest.raises(gpu_calls.GpuCallError, match=r"_Unpicklable: 1 and 2"):
        gpu_calls.checked(carried)


def test_checked_steps_raise_a_failure_and_close_the_source():
    closed = []

    def source():
        try:
            yield 1
            yield gpu_calls.as_failure(ValueError("bad step"))
            yield 3
        finally:
            closed.append(True)

    steps = gpu_calls.checked_steps(source())
    assert next(steps) == 1
    with pytest.raises(ValueError, match="bad step"):
        next(steps)
    assert closed == [True]
    early = gpu_calls.checked_steps(source())
    assert next(early) == 1
    early.close()  # Stop: closing the consumer closes the GPU generator
    assert closed == [True, True]


def test_the_registry_holds_editors_weakly():
    class Editor:
        pass

    editor = Editor()
    key = gpu_calls.register(editor)
    assert gpu_calls.registered(key) is editor
    del editor
    gc.collect()
    with pytest.raises(gpu_calls.GpuCallError, match="no editor is registered"):
        gpu_calls.registered(key)


DRIVER_LINE = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02  Thu May  2 14:37:44 UTC 2024"


@pytest.fixture()
def old_driver(tmp_path):
    """A driver version file as /proc/driver/nvidia/version has it."""
    path = tmp_path / "version"
    path.write_text(DRIVER_LINE + "\nGCC version:  gcc version 12\n")
    return path


def test_a_gpu_that_is_there_but_unusable_is_named(monkeypatch, old_driver, tmp_path):
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware.torch.version, "cuda", "13.0")
    reason = hardware.unusable_gpu_reason("auto", driver_file=old_driver)
    assert reason == (f"A GPU was expected (an NVIDIA driver is loaded) but CUDA is not usable: this torch "
                      f"({hardware.torch.__version__}) is built for CUDA 13.0, which needs a driver that supports it; "
                      f"the driver says: {DRIVER_LINE}. Running on the CPU.")
    missing = tmp_path / "no-driver"
    assert hardware.unusable_gpu_reason("auto", driver_file=missing) is None  # nothing expected a GPU
    assert "(--device cuda:1)" in hardware.unusable_gpu_reason("cuda:1", driver_file=missing)
    assert "no NVIDIA driver was found" in hardware.unusable_gpu_reason("cuda", driver_file=missing)
    monkeypatch.setattr(hardware.torch.version, "cuda", None)
    assert "is a CPU-only build" in hardware.unusable_gpu_reason("cuda", driver_file=missing)
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: True)
    assert hardware.unusable_gpu_reason("cuda", driver_file=old_driver) is None


def test_the_app_runs_on_the_cpu_and_says_why_when_cuda_is_unusable(monkeypatch, landmarks_model_path):
    import app

    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    options = app.AppOptions(model="tiny", device="cuda", landmarks=str(landmarks_model_path), lpips="random")
    assert options.resolved_device() == "cpu"
    editor = app.load_editor(options)
    banner = app.banner_text(editor, app.serving_notes(editor, options))
    assert "A GPU was expected (--device cuda) but CUDA is not usable" in banner and "on **CPU**" in banner
    cpu_options = app.AppOptions(model="tiny", device="cpu")
    assert cpu_options.gpu_problem() is None and app.serving_notes(editor, cpu_options) == []


def test_the_banner_says_how_the_fused_cuda_ops_stand(monkeypatch):
    import app
    from pti.ops.cuda_plugin import OpsStatus

    on_a_gpu = types.SimpleNamespace(zerogpu=False, device=hardware.torch.device("cuda"))
    options = app.AppOptions(device="cuda")
    monkeypatch.setattr(app.AppOptions, "gpu_problem", lambda self: None)
    monkeypatch.setattr(app.cuda_plugin, "status", lambda: OpsStatus("building", "started 12 s ago"))
    assert app.serving_notes(on_a_gpu, options) == [
        "Fused CUDA ops: building (started 12 s ago); not in use: the reference ops serve."]
    monkeypatch.setattr(app.cuda_plugin, "status", lambda: OpsStatus("ready", "built and self-tested in 200 s"))
    assert app.serving_notes(on_a_gpu, options) == ["Fused CUDA ops: ready (built and self-tested in 200 s); in use."]
    on_zerogpu = types.SimpleNamespace(zerogpu=True, device=hardware.torch.device("cpu"),
                                       durations=GpuDurations(PRIOR, max_seconds=200))
    assert "at most 200 s" in app.serving_notes(on_zerogpu, options)[0]


# A parent thread runs an OpenMP parallel region and forks; the child (that thread alone) runs one too, as the
# ZeroGPU worker does when the request thread that forks it ran CPU torch work before (a text edit's CLIP pass).
# Prints "finished" or, after FORK_WAIT_S, "hung" (and kills the child).
FORK_SCRIPT = """
import os, sys, time, torch
sys.path.insert(0, {root!r})
from pti.serving.zerogpu import fork_safe_cpu_threads
a = torch.randn(2000, 2000); (a @ a).sum()
pid = os.fork()
if pid == 0:
    if {workaround}:
        fork_safe_cpu_threads()
    b = torch.randn(2000, 2000); (b @ b).sum()
    os._exit(0)
deadline = time.monotonic() + {wait}
while time.monotonic() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0]:
        print("finished"); break
    time.sleep(0.05)
else:
    os.kill(pid, 9); os.waitpid(pid, 0); print("hung")
"""
FORK_WAIT_S = 15  # the child's product takes well under a second when it runs at all


def fork_after_openmp(workaround: bool, monkeypatch) -> str:
    """Run FORK_SCRIPT in a fresh interpreter (on ZeroGPU by its environment variable); what it printed."""
    import subprocess
    from pathlib import Path

    monkeypatch.setenv(zerogpu.ZEROGPU_ENV_VAR, "true")
    script = FORK_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), workaround=workaround,
                                wait=FORK_WAIT_S)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.upstream
@pytest.mark.skipif(not torch.backends.openmp.is_available() or torch.get_num_threads() < 2,
                    reason="needs torch with OpenMP and at least two CPU threads")
def test_stock_torch_hangs_in_a_child_forked_after_an_openmp_region(monkeypatch):
    """Fails once PyTorch makes OpenMP fork-safe: then `fork_safe_cpu_threads` can go
    (docs/upstream/torch-openmp-fork.md)."""
    assert fork_after_openmp(False, monkeypatch) == "hung"


def test_a_gpu_function_thread_in_a_forked_worker_does_not_hang(monkeypatch):
    assert fork_after_openmp(True, monkeypatch) == "finished"
