"""Choosing an op implementation, and the CUDA plugin's life in a process (never built at import).

With `impl='auto'` (the default) an op runs:
- the pure-PyTorch reference on CPU tensors, under torch.compile, and everywhere when `PTI_OPS_IMPL=ref`;
- the CUDA kernels on CUDA tensors once the plugin is ready: built (pti.ops.build) in a background thread and
  self-tested against the reference on the GPU (pti.ops.self_test). A server calls `start_background_build()` at
  start-up; otherwise the first op on a CUDA tensor starts the build. Until the build is ready the reference ops serve,
  so no call waits for the compiler (a one-off script may therefore run on the reference throughout: call
  `wait_for_build()` first to get the kernels from the first call). The build's start and end are logged.
Any failure (no toolkit, a compile or import error, a self-test mismatch, an error raised by a kernel at run time)
switches the process to the reference ops for good, with one RuntimeWarning; `status()` says why.
`impl='cuda'` waits for the build, raises OpsImplError when the kernels are unavailable, and lets kernel errors raise.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, TypeVar

import torch

IMPL_ENV_VAR = "PTI_OPS_IMPL"
"""Environment variable: `ref` forces the pure-PyTorch reference ops everywhere; `auto` (or unset) is the default."""

ENV_VALUES = ("auto", "ref")
IMPLS = ("auto", "ref", "cuda")

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class OpsImplError(ValueError):
    """An op was asked for an implementation that does not exist or cannot run on the given tensor."""


@dataclass(frozen=True)
class OpsStatus:
    """Where the CUDA ops stand in this process, for banners and logs."""

    state: Literal["reference-only", "building", "ready", "failed"]
    detail: str  # one sentence: why, or since when


@dataclass(frozen=True)
class Kernels:
    """A loaded ops plugin (the CUDA build, or its host emulation in tests) and whom to tell when a kernel fails."""

    module: ModuleType
    on_failure: Callable[[BaseException], None] | None = None  # None: a kernel error raises (impl='cuda', tests)


def run_kernel(kernels: Kernels, kernel_call: Callable[[ModuleType], _T], reference_call: Callable[[], _T]) -> _T:
    """`kernel_call(module)`; when it raises and the kernels may fall back, report it and return `reference_call()`."""
    if kernels.on_failure is None:
        return kernel_call(kernels.module)
    try:
        return kernel_call(kernels.module)
    except torch.OutOfMemoryError:
        raise  # not the plugin's fault: the reference would need the memory too
    except Exception as error:  # noqa: BLE001 - any kernel error: the reference serves from now on
        kernels.on_failure(error)
        return reference_call()


class PluginLoader:
    """Builds and self-tests one ops plugin, at most once, in a background thread; hands it out when ready."""

    def __init__(self, build: Callable[[], ModuleType], self_test: Callable[[ModuleType], None]) -> None:
        """`build` compiles and imports the plugin; `self_test` raises when its kernels disagree with the reference."""
        self._build, self._self_test = build, self_test
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._started = False
        self._module: ModuleType | None = None
        self._status = OpsStatus("reference-only", "the CUDA ops have not been built in this process")

    def status(self) -> OpsStatus:
        """The current status (never waits)."""
        return self._status

    def start(self) -> OpsStatus:
        """Start the build in a background thread unless it was started before; the status right after."""
        with self._lock:
            if not self._started:
                self._started = True
                self._status = OpsStatus("building", "building the CUDA ops in the background; reference ops meanwhile")
                threading.Thread(target=self._build_and_test, name="pti-ops-build", daemon=True).start()
            return self._status

    def wait(self, timeout: float | None = None) -> OpsStatus:
        """Start the build if needed and wait until it has finished (or `timeout` seconds passed)."""
        self.start()
        self._finished.wait(timeout)
        return self._status

    def kernels(self) -> Kernels | None:
        """The plugin's kernels, falling back to the reference on a kernel error, once ready; None before (no wait)."""
        if not self._started:
            self.start()
        module = self._module
        return Kernels(module, on_failure=self.fail) if module is not None else None

    def ready_module(self) -> ModuleType | None:
        """The plugin module when it is ready, else None (never waits)."""
        return self._module

    def fail(self, error: BaseException, stage: str = "a kernel failed at run time") -> None:
        """Switch to the reference ops for the rest of the process; warn once."""
        with self._lock:
            if self._status.state == "failed":
                return
            self._module = None
            self._status = OpsStatus("failed", f"{stage} ({type(error).__name__}: {error}); reference ops serve")
        self._finished.set()
        _log.warning("CUDA ops: %s", self._status.detail)
        warnings.warn(f"CUDA ops disabled: {self._status.detail} (slower).", RuntimeWarning, stacklevel=2)

    def _build_and_test(self) -> None:
        """The background thread: build, import and self-test; then ready, or failed."""
        started = time.monotonic()
        _log.info("CUDA ops: building in the background")
        try:
            module = self._build()
        except Exception as error:  # noqa: BLE001 - any build/import failure means: use the reference ops
            self.fail(error, "the build failed")
            return
        try:
            self._self_test(module)
        except Exception as error:  # noqa: BLE001 - a mismatch or an error: never use these kernels
            self.fail(error, "the self-test failed")
            return
        with self._lock:
            if self._status.state == "building":
                self._module = module
                self._status = OpsStatus("ready", f"built and self-tested in {time.monotonic() - started:.0f} s")
        self._finished.set()
        _log.info("CUDA ops: %s", self._status.detail)


def _build_cuda_plugin() -> ModuleType:
    """Compile and import the CUDA plugin for the visible GPUs (torch's extension cache; ninja rebuilds changes)."""
    from pti.ops.build import BuildOptions, build_cuda_plugin

    return build_cuda_plugin(BuildOptions())


def _self_test_on_current_gpu(module: ModuleType) -> None:
    """Self-test the plugin on the current CUDA device."""
    from pti.ops.self_test import self_test

    self_test(Kernels(module), torch.device("cuda", torch.cuda.current_device()))


_LOADER = PluginLoader(_build_cuda_plugin, _self_test_on_current_gpu)
"""The process-wide cache of the one CUDA plugin: compiling it costs minutes, so it is built once per process."""


def reference_forced() -> bool:
    """True when `PTI_OPS_IMPL=ref` forces the reference ops; raises OpsImplError for values other than auto/ref."""
    value = os.environ.get(IMPL_ENV_VAR, "").strip().lower()
    if value not in ("", *ENV_VALUES):
        raise OpsImplError(f"{IMPL_ENV_VAR} must be one of {', '.join(ENV_VALUES)} (or unset), got {value!r}")
    return value == "ref"


def _unavailable() -> OpsStatus | None:
    """Why the CUDA ops cannot be used in this process at all, or None."""
    if reference_forced():
        return OpsStatus("reference-only", f"{IMPL_ENV_VAR}=ref forces the reference ops")
    if not torch.cuda.is_available():
        return OpsStatus("reference-only", "no CUDA device: the reference ops serve")
    return None


def status() -> OpsStatus:
    """Where the CUDA ops stand in this process (never waits, never starts a build)."""
    return _unavailable() or _LOADER.status()


def start_background_build() -> OpsStatus:
    """Start building the CUDA ops in a background thread (once per process; no-op without CUDA or when forced off)."""
    return _unavailable() or _LOADER.start()


def wait_for_build(timeout: float | None = None) -> OpsStatus:
    """Start the build if needed and wait until it has finished (ready or failed), at most `timeout` seconds."""
    return _unavailable() or _LOADER.wait(timeout)


def load_cuda_extension() -> ModuleType | None:
    """Wait for the CUDA plugin (starting the build if needed): the module when ready, None when unavailable."""
    wait_for_build()
    return None if _unavailable() else _LOADER.ready_module()


def select_kernels(impl: str | Kernels, x: torch.Tensor) -> Kernels | None:
    """The kernels an op on `x` runs with for `impl` ('auto' | 'ref' | 'cuda' | given Kernels); None: the reference."""
    if isinstance(impl, Kernels):
        return impl
    if impl not in IMPLS:
        raise OpsImplError(f"impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    if impl == "ref" or reference_forced():
        return None
    if impl == "cuda":
        if x.device.type != "cuda":
            raise OpsImplError(f"impl='cuda' needs a CUDA tensor, got one on {x.device}")
        module = load_cuda_extension()
        if module is None:
            raise OpsImplError(f"impl='cuda' was asked for but the CUDA ops are unavailable: {status().detail}")
        return Kernels(module)
    if x.device.type != "cuda" or torch.compiler.is_compiling():
        return None
    return _LOADER.kernels()
