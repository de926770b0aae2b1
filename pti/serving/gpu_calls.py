"""The GPU functions of the face editor: module-level, over plain data, so that ZeroGPU can run them in its worker.

Each takes the key of a registered editor (the editor itself holds locks and loaders, which do not pickle; the
ZeroGPU worker is forked from the main process, so it finds the same registry) and plain values: aligned faces,
settings, a generator and codes on the CPU. Results come back on the CPU. An exception inside a GPU function
comes back as a `Failure` value and is raised again by the caller (ZeroGPU would reduce it to its class name).
"""
from __future__ import annotations

import contextlib
import copy
import pickle
import queue
import threading
import traceback
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, TypeVar

import numpy as np
import torch
from PIL import Image

from pti.progress import Progress
from pti.serving.zerogpu import fork_safe_cpu_threads, gpu_task

if TYPE_CHECKING:
    from alignment import AlignedFace
    from pti.editor import FaceEditor, Inversion, InversionSettings

T = TypeVar("T")

# The editors loaded in this process, by key (a process-wide registry: it is what a forked worker inherits).
_EDITORS: "weakref.WeakValueDictionary[str, FaceEditor]" = weakref.WeakValueDictionary()


class GpuCallError(RuntimeError):
    """An error inside a GPU function that could not be carried back as itself (it does not pickle)."""


@dataclass(frozen=True)
class Failure:
    """An exception raised inside a GPU function, carried back as a value, with the traceback from there."""

    error: BaseException
    traceback: str

    def raise_again(self) -> None:
        """Raise the error in the caller, with the GPU function's traceback as a note."""
        self.error.add_note(f"raised in a GPU function:\n{self.traceback}")
        raise self.error


@dataclass(frozen=True)
class RenderedImages:
    """The images of a render in a GPU function and its measured time."""

    images: tuple[Image.Image, ...]
    seconds: float


def register(editor: "FaceEditor") -> str:
    """Register a loaded editor for the GPU functions; returns its key (held weakly: the editor's life decides)."""
    key = uuid.uuid4().hex
    _EDITORS[key] = editor
    return key


def registered(key: str) -> "FaceEditor":
    """The editor registered under `key`."""
    try:
        return _EDITORS[key]
    except KeyError:
        raise GpuCallError(f"no editor is registered under {key!r} in this process") from None


def as_failure(error: BaseException) -> Failure:
    """`error` as a value that crosses a process: itself when it pickles and can be rebuilt from its reduction (as
    unpickling would), else a `GpuCallError` with its type and message."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.dumps(error)
        copy.copy(error)  # rebuilt from `__reduce__` as unpickling does: fails for constructors that need more
    except Exception:  # noqa: BLE001 - whatever cannot cross is carried as text
        error = GpuCallError(f"{type(error).__name__}: {error}")
    return Failure(error, text)


def checked(value: T | Failure) -> T:
    """The value a GPU function returned, or its error raised again."""
    if isinstance(value, Failure):
        value.raise_again()
    return value


def _inversion_seconds(key: str, aligned_faces: "tuple[AlignedFace, ...]", settings: "InversionSettings") -> int:
    """Seconds to ask for an inversion (same arguments as `invert_steps`)."""
    return registered(key).gpu_seconds(settings, faces=len(aligned_faces))


def _render_seconds(key: str, generator: torch.nn.Module, codes: torch.Tensor,
                    style_offsets: tuple[np.ndarray, ...] | None = None) -> int:
    """Seconds to ask for a render (same arguments as `render_codes`)."""
    return registered(key).render_gpu_seconds(int(codes.shape[0]))


@gpu_task(duration=_inversion_seconds)
def invert_steps(key: str, aligned_faces: "tuple[AlignedFace, ...]",
                 settings: "InversionSettings") -> Iterator["Progress | tuple[Inversion, ...] | Failure"]:
    """PTI of one or several faces (one generator tuned for all) on the registered editor, in a thread: yields every
    step's `Progress`, then one `Inversion` per face (on the CPU, sharing the tuned generator), or a `Failure`.
    Closing the iterator (Stop) cancels the run within one step and waits for it to end."""
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: list[tuple[Inversion, ...] | Failure] = []

    def report(progress: Progress) -> bool:
        updates.put(progress)
        return stop.is_set()

    def run() -> None:
        try:
            fork_safe_cpu_threads()
            outcome.append(registered(key).run_inversions(aligned_faces, settings, report))
        except Exception as error:  # noqa: BLE001 - carried back to the caller, which raises it
            outcome.append(as_failure(error))
        finally:
            updates.put(None)

    worker = threading.Thread(target=run, name="pti-invert", daemon=True)
    worker.start()
    try:
        while (item := updates.get()) is not None:
            yield item
    finally:
        stop.set()
        worker.join()
    yield outcome[0]


@gpu_task(duration=_render_seconds)
def render_codes(key: str, generator: torch.nn.Module, codes: torch.Tensor,
                 style_offsets: tuple[np.ndarray, ...] | None = None) -> RenderedImages | Failure:
    """Images of W+ `codes` (N, num_ws, w_dim) by `generator` (on the CPU; not changed) on the call's device, with
    StyleSpace `style_offsets` (one (N, C) numpy array per conv layer, computed outside: text edits) if given."""
    try:
        fork_safe_cpu_threads()
        return registered(key).run_render(generator, codes, style_offsets)
    except Exception as error:  # noqa: BLE001 - carried back to the caller, which raises it
        return as_failure(error)


def checked_steps(steps: Iterator[T | Failure]) -> Iterator[T]:
    """The items of a GPU generator, a `Failure` raised again; closing this closes `steps` (and so stops the run)."""
    with contextlib.closing(steps):
        for item in steps:
            yield checked(item)

