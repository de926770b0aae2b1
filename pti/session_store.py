"""Per-session values (tuned generators kept on the CPU) bounded in number and bytes, evicted least-recently-used."""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

import numpy as np
import torch
from PIL import Image

T = TypeVar("T")


class SessionTooLargeError(ValueError):
    """A single session's value is larger than the whole store's byte budget."""


def format_bytes(count: int) -> str:
    """Human-readable size: 1536 -> '1.5 KiB'."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def estimate_nbytes(value: object) -> int:
    """Bytes held by `value`: tensors (modules' parameters and buffers, shared storage counted once), arrays, images.

    Walks modules, dataclasses, mappings and sequences; everything else counts as zero.
    """
    seen_storages: set[int] = set()
    seen_objects: set[int] = set()

    def walk(item: object) -> int:
        if id(item) in seen_objects:
            return 0
        seen_objects.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() in seen_storages and storage.data_ptr() != 0:
                return 0
            seen_storages.add(storage.data_ptr())
            return storage.nbytes()
        if isinstance(item, torch.nn.Module):
            return sum(walk(t) for t in [*item.parameters(), *item.buffers()])
        if isinstance(item, np.ndarray):
            return int(item.nbytes)
        if isinstance(item, Image.Image):
            return item.width * item.height * len(item.getbands())
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return sum(walk(getattr(item, field.name)) for field in dataclasses.fields(item))
        if isinstance(item, dict):
            return sum(walk(v) for v in item.values())
        if isinstance(item, (list, tuple)):
            return sum(walk(v) for v in item)
        return 0

    return walk(value)


class SessionStore(Generic[T]):
    """Values keyed by session id, bounded by `max_sessions` and `max_bytes`, evicted least-recently-used.

    A session whose value was evicted gets a message (`eviction_notice`) the next time it asks. Thread-safe.
    Each session has its own value; nothing is ever shared between session ids.
    """

    def __init__(
        self,
        *,
        max_sessions: int,                              # most sessions held at once
        max_bytes: int,                                 # most bytes held at once (as counted by `size_of`)
        size_of: Callable[[T], int] = estimate_nbytes,  # bytes held by one value
        max_notices: int = 1024,                        # most eviction notices remembered
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._release_listeners: list[Callable[[str, T], None]] = []
        self._max_notices = max_notices
        self._entries: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._notices: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of sessions held."""
        with self._lock:
            return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        """Whether `session_id` has a value (does not count as a use)."""
        with self._lock:
            return session_id in self._entries

    @property
    def total_bytes(self) -> int:
        """Bytes held by all sessions together."""
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def get(self, session_id: str) -> T | None:
        """The session's value (marking it most recently used), or None when it has none or it was evicted."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            self._entries.move_to_end(session_id)
            return entry[0]

    def put(self, session_id: str, value: T) -> list[str]:
        """Store (or replace) the session's value; evicts other sessions, oldest first, to stay in bounds.

        Returns the evicted session ids. Raises SessionTooLargeError when the value alone exceeds `max_bytes`.
        """
        size = self._size_of(value)
        if size > self.max_bytes:
            raise SessionTooLargeError(
                f"this session needs {format_bytes(size)}, more than the server's whole budget of "
                f"{format_bytes(self.max_bytes)} for sessions"
            )
        released: list[tuple[str, T]] = []
        with self._lock:
            self._entries.pop(session_id, None)
            self._notices.pop(session_id, None)
            used = sum(s for _, s in self._entries.values())
            while self._entries and (len(self._entries) >= self.max_sessions or used + size > self.max_bytes):
                evicted_id, (evicted_value, evicted_size) = self._entries.popitem(last=False)
                used -= evicted_size
                released.append((evicted_id, evicted_value))
                self._remember_notice(evicted_id)
            self._entries[session_id] = (value, size)
        self._call_release(released)
        return [sid for sid, _ in released]

    def add_release_listener(self, listener: Callable[[str, T], None]) -> None:
        """Call `listener(session_id, value)` whenever a value leaves the store (eviction or release)."""
        with self._lock:
            self._release_listeners.append(listener)

    def eviction_notice(self, session_id: str) -> str | None:
        """The message for a session whose value was evicted to make room, or None."""
        with self._lock:
            return self._notices.get(session_id)

    def release(self, session_id: str) -> None:
        """Forget the session entirely (its value and any eviction notice); e.g. when its browser tab closes."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
            self._notices.pop(session_id, None)
        if entry is not None:
            self._call_release([(session_id, entry[0])])

    def _remember_notice(self, session_id: str) -> None:
        """Record the eviction message for `session_id` (caller holds the lock)."""
        self._notices[session_id] = (
            "This session's tuned generator was freed to make room for other people (the server keeps "
            f"{self.max_sessions} session(s) and {format_bytes(self.max_bytes)} at most). "
            "Give the photo again and press Invert."
        )
        while len(self._notices) > self._max_notices:
            self._notices.popitem(last=False)

    def _call_release(self, released: list[tuple[str, T]]) -> None:
        """Tell the release listeners (outside the lock)."""
        with self._lock:
            listeners = list(self._release_listeners)
        for session_id, value in released:
            for listener in listeners:
                listener(session_id, value)
