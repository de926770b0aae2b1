"""The CUDA plugin's life in a process (pti.ops.cuda_plugin) with injected builders, the self-test, and the fallback
after a kernel error; on the CPU with the host-emulated kernels, plus GPU checks of the real build."""
from __future__ import annotations

import threading
import types
import warnings

import pytest
import torch

from ops_helpers import emulated_kernels
from pti.ops import bias_act, cuda_plugin, setup_filter, upfirdn2d
from pti.ops.cuda_plugin import Kernels, OpsStatus, PluginLoader, run_kernel
from pti.ops.self_test import SelfTestError, self_test


def wait_until_finished(loader: PluginLoader) -> OpsStatus:
    """The loader's status once its build thread is done (a bounded wait)."""
    status = loader.wait(timeout=30)
    assert status.state in ("ready", "failed"), status
    return status


def test_build_runs_once_in_the_background_even_when_many_threads_start_it():
    release = threading.Event()
    builds = []
    module = types.ModuleType("fake_plugin")

    def build():
        builds.append(threading.current_thread().name)
        release.wait(timeout=30)
        return module

    loader = PluginLoader(build, self_test=lambda m: None)
    assert loader.status() == OpsStatus("reference-only", "the CUDA ops have not been built in this process")
    barrier = threading.Barrier(8)
    states = []

    def start():
        barrier.wait()
        states.append(loader.start().state)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == ["building"] * 8
    assert loader.kernels() is None  # still building: the reference serves, nothing waits
    release.set()
    assert wait_until_finished(loader).state == "ready"
    assert builds == ["pti-ops-build"]
    kernels = loader.kernels()
    assert kernels is not None and kernels.module is module and kernels.on_failure == loader.fail


@pytest.mark.parametrize("stage", ["build", "self-test"])
def test_a_failed_build_or_self_test_warns_once_and_leaves_the_reference(stage):
    def build():
        if stage == "build":
            raise RuntimeError("nvcc not found")
        return types.ModuleType("fake_plugin")

    def failing_self_test(module):
        raise SelfTestError("upfirdn2d values differ")

    loader = PluginLoader(build, failing_self_test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader.start()
        status = wait_until_finished(loader)
        loader.start()  # a second start does not build again
    assert status.state == "failed"
    assert ("the build failed" if stage == "build" else "the self-test failed") in status.detail
    assert ("nvcc not found" if stage == "build" else "upfirdn2d values differ") in status.detail
    assert len([w for w in caught if "CUDA ops disabled" in str(w.message)]) == 1
    assert loader.kernels() is None


def test_a_kernel_error_at_run_time_switches_to_the_reference_for_good():
    """A kernel that raises (e.g. no kernel image for this GPU): the op still returns the reference's values, the
    loader is 'failed' and hands out no kernels any more, and the warning comes once."""
    broken = types.ModuleType("broken_plugin")
    calls = []

    def no_kernel_image(*args):
        calls.append(args)
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    broken.bias_act_forward = broken.bias_act_backward = broken.upfirdn2d = no_kernel_image
    loader = PluginLoader(lambda: broken, self_test=lambda m: None)
    assert wait_until_finished(loader).state == "ready"
    x = torch.randn([2, 3, 4, 4], requires_grad=True)
    f = setup_filter([1, 3, 3, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = bias_act(x, act="lrelu", impl=loader.kernels())
        assert loader.status().state == "failed" and "no kernel image" in loader.status().detail
        assert loader.kernels() is None
        (grad,) = torch.autograd.grad(y.sum(), x)  # the backward's kernel fails too: the reference answers
        z = upfirdn2d(x, f, up=2, padding=1, impl=Kernels(broken, on_failure=loader.fail))
    assert len(calls) == 3
    assert len([w for w in caught if "CUDA ops disabled" in str(w.message)]) == 1
    torch.testing.assert_close(y, bias_act(x, act="lrelu", impl="ref"))
    torch.testing.assert_close(grad, torch.where(x > 0, 1.0, 0.2) * 2**0.5)
    torch.testing.assert_close(z, upfirdn2d(x, f, up=2, padding=1, impl="ref"))


def test_run_kernel_raises_without_fallback_and_never_hides_out_of_memory():
    failures = []

    def fail(module):
        raise RuntimeError("launch failed")

    def oom(module):
        raise torch.OutOfMemoryError("CUDA out of memory")

    module = types.ModuleType("plugin")
    with pytest.raises(RuntimeError, match="launch failed"):
        run_kernel(Kernels(module), fail, lambda: "reference")
    with pytest.raises(torch.OutOfMemoryError):
        run_kernel(Kernels(module, on_failure=failures.append), oom, lambda: "reference")
    assert run_kernel(Kernels(module, on_failure=failures.append), fail, lambda: "reference") == "reference"
    assert [str(e) for e in failures] == ["launch failed"]


def test_module_functions_report_reference_only_without_cuda_or_when_forced(monkeypatch):
    builds = []
    monkeypatch.setattr(cuda_plugin, "_LOADER", PluginLoader(lambda: builds.append(1), lambda m: None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_plugin.start_background_build().state == "reference-only"
    assert "no CUDA device" in cuda_plugin.status().detail
    assert cuda_plugin.load_cuda_extension() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(cuda_plugin.IMPL_ENV_VAR, "ref")
    assert cuda_plugin.start_background_build() == OpsStatus("reference-only",
                                                             "PTI_OPS_IMPL=ref forces the reference ops")
    assert builds == []


def test_module_functions_drive_the_process_loader(monkeypatch):
    """With a GPU (faked here): start_background_build() starts the one build and returns at once; status() follows."""
    release = threading.Event()
    module = types.ModuleType("fake_plugin")
    monkeypatch.delenv(cuda_plugin.IMPL_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_plugin, "_LOADER", PluginLoader(lambda: release.wait(30) and module, lambda m: None))
    assert cuda_plugin.start_background_build().state == "building"
    assert cuda_plugin.status().state == "building"
    release.set()
    assert cuda_plugin.wait_for_build(timeout=30).state == "ready"
    assert cuda_plugin.load_cuda_extension() is module


def test_self_test_passes_on_the_emulated_kernels():
    self_test(emulated_kernels(), torch.device("cpu"))


@pytest.mark.parametrize("defect", ["bias_act gain", "upfirdn2d flipped", "upfirdn2d dtype"])
def test_self_test_catches_wrong_kernels(defect):
    """A plugin whose kernels compute something else than the reference never gets used."""
    real = emulated_kernels().module
    wrong = types.ModuleType("wrong_plugin")
    wrong.bias_act_forward, wrong.bias_act_backward, wrong.upfirdn2d = (
        real.bias_act_forward, real.bias_act_backward, real.upfirdn2d)
    if defect == "bias_act gain":
        wrong.bias_act_forward = lambda *a: real.bias_act_forward(*a[:7], a[7] * 1.01, a[8])
    elif defect == "upfirdn2d flipped":
        wrong.upfirdn2d = lambda x, f, *rest: real.upfirdn2d(x, f.flip([0]).contiguous(), *rest)
    else:
        wrong.upfirdn2d = lambda *a: real.upfirdn2d(*a).float()
    with pytest.raises(SelfTestError):
        self_test(Kernels(wrong), torch.device("cpu"))


# ---------------------------------------------------------------- the real build on a GPU


@pytest.fixture()
def fresh_loader(monkeypatch):
    """A process loader of its own (the real builder and self-test), so that a test may break it."""
    monkeypatch.delenv(cuda_plugin.IMPL_ENV_VAR, raising=False)
    loader = PluginLoader(cuda_plugin._build_cuda_plugin, cuda_plugin._self_test_on_current_gpu)
    monkeypatch.setattr(cuda_plugin, "_LOADER", loader)
    return loader


@pytest.mark.gpu
def test_auto_serves_the_reference_while_building_then_the_self_tested_kernels(fresh_loader):
    x = torch.randn([2, 3, 8, 8], device="cuda")
    y = bias_act(x, act="lrelu")  # the first CUDA call starts the build and does not wait for it
    assert cuda_plugin.status().state in ("building", "ready")
    torch.testing.assert_close(y, bias_act(x, act="lrelu", impl="ref"))
    assert cuda_plugin.wait_for_build().state == "ready", cuda_plugin.status().detail
    assert cuda_plugin.select_kernels("auto", x) is not None


@pytest.mark.gpu
def test_a_kernel_error_on_the_gpu_falls_back_to_the_reference(fresh_loader):
    assert cuda_plugin.wait_for_build().state == "ready", cuda_plugin.status().detail
    real = fresh_loader.ready_module()
    broken = types.ModuleType("broken_plugin")
    broken.upfirdn2d = lambda *a: real.upfirdn2d(a[0].cpu(), *a[1:])  # the plugin's own check raises
    x = torch.randn([1, 2, 8, 8], device="cuda")
    f = setup_filter([1, 3, 3, 1], device="cuda")
    with pytest.warns(RuntimeWarning, match="CUDA ops disabled"):
        y = upfirdn2d(x, f, up=2, padding=1, impl=Kernels(broken, on_failure=fresh_loader.fail))
    torch.testing.assert_close(y, upfirdn2d(x, f, up=2, padding=1, impl="ref"))
    assert cuda_plugin.status().state == "failed" and cuda_plugin.select_kernels("auto", x) is None
