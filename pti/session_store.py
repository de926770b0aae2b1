"""Per-session values (tuned generators kept on the CPU) bounded in number and bytes, least-recently-used first out:
written to disk (a `Spiller`) and read back when needed, dropped only when the disk budget is spent too."""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

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

    Walks modules, dataclasses, mappings and sequences; counts bytes objects; everything else counts as zero.
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
        if isinstance(item, (bytes, bytearray)):
            return len(item)
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


class ParkedValue(Protocol):
    """What a `Spiller` leaves in memory for a value it wrote to disk."""

    disk_bytes: int  # bytes written to disk
    memory_bytes: int  # bytes still held in memory (what the value keeps besides the part on disk)


class Spiller(Protocol[T]):
    """Writes session values to disk and reads them back (atomically; the files are its own)."""

    def park(self, session_id: str, value: T) -> ParkedValue:
        """Write the heavy part of `value` to disk; the returned handle is all that stays in memory."""

    def unpark(self, parked: ParkedValue) -> T:
        """The value again, read back from disk (its files are left for `discard`)."""

    def discard(self, parked: ParkedValue) -> None:
        """Delete the files of a parked value."""


@dataclass(eq=False)
class _Live(Generic[T]):
    value: T
    size: int  # bytes in memory
    last_used: float


@dataclass(eq=False)
class _Parked:
    parked: ParkedValue
    last_used: float


class SessionStore(Generic[T]):
    """Values keyed by session id, bounded by `max_sessions` and `max_bytes` in memory, least-recently-used first out.

    With a `spiller`, a value that has to leave memory is written to disk instead of dropped, and read back on its
    session's next `get`; parked values are bounded by `max_disk_bytes` (the least recently used is dropped first)
    and count their in-memory remainder against `max_bytes`. With `idle_seconds`, a session unused that long is
    freed. A session whose value was dropped gets a message (`eviction_notice`) the next time it asks. Thread-safe;
    disk reads and writes happen under the store's lock (simple, and a session is never seen half-moved). Each
    session has its own value; nothing is ever shared between session ids.
    """

    def __init__(
        self,
        *,
        max_sessions: int,                              # most sessions held in memory at once
        max_bytes: int,                                 # most bytes held in memory at once (as counted by `size_of`)
        size_of: Callable[[T], int] = estimate_nbytes,  # bytes held by one value
        max_notices: int = 1024,                        # most eviction notices remembered
        spiller: Spiller[T] | None = None,              # writes values that leave memory to disk (None: drop them)
        max_disk_bytes: int = 0,                        # most bytes of parked values on disk
        idle_seconds: float | None = None,              # sessions unused this long are freed (None: never)
        clock: Callable[[], float] = time.monotonic,    # seconds, for the idle time
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if max_disk_bytes < 0:
            raise ValueError(f"max_disk_bytes must not be negative, got {max_disk_bytes}")
        if idle_seconds is not None and idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds}")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.idle_seconds = idle_seconds
        self._size_of = size_of
        self._spiller = spiller
        self._clock = clock
        self._release_listeners: list[Callable[[str], None]] = []
        self._max_notices = max_notices
        self._live: OrderedDict[str, _Live[T]] = OrderedDict()
        self._parked: OrderedDict[str, _Parked] = OrderedDict()
        self._notices: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of sessions held in memory."""
        with self._lock:
            return len(self._live)

    def __contains__(self, session_id: object) -> bool:
        """Whether `session_id` has a value, in memory or on disk (does not count as a use)."""
        with self._lock:
            return session_id in self._live or session_id in self._parked

    @property
    def total_bytes(self) -> int:
        """Bytes held in memory by all sessions together (parked ones' remainders included)."""
        with self._lock:
            return self._memory_bytes()

    @property
    def parked_sessions(self) -> int:
        """Number of sessions whose value waits on disk."""
        with self._lock:
            return len(self._parked)

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk of the parked sessions."""
        with self._lock:
            return self._disk_bytes()

    def get(self, session_id: str) -> T | None:
        """The session's value (read back from disk if it was parked; marks it most recently used), or None when it
        has none or it was dropped."""
        freed: list[tuple[str, str | None]] = []
        with self._lock:
            now = self._clock()
            self._expire(now, freed)
            live = self._live.get(session_id)
            if live is not None:
                self._live.move_to_end(session_id)
                live.last_used = now
                value: T | None = live.value
            elif session_id in self._parked:
                value = self._unpark(session_id, now, freed)
            else:
                value = None
        self._free(freed)
        return value

    def put(self, session_id: str, value: T) -> list[str]:
        """Store (or replace) the session's value; parks or drops other sessions, oldest first, to stay in bounds.

        Returns the ids of the sessions dropped (not those parked). Raises SessionTooLargeError when the value alone
        exceeds `max_bytes`.
        """
        size = self._size_of(value)
        if size > self.max_bytes:
            raise SessionTooLargeError(
                f"this session needs {format_bytes(size)}, more than the server's whole budget of "
                f"{format_bytes(self.max_bytes)} for sessions"
            )
        freed: list[tuple[str, str | None]] = []
        with self._lock:
            now = self._clock()
            self._expire(now, freed)
            self._take(session_id)
            self._notices.pop(session_id, None)
            self._live[session_id] = _Live(value, size, now)
            self._make_room(session_id, freed)
        self._free(freed)
        return [sid for sid, notice in freed if notice is not None]

    def add_release_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(session_id)` whenever a session leaves the store (dropped, expired or released)."""
        with self._lock:
            self._release_listeners.append(listener)

    def eviction_notice(self, session_id: str) -> str | None:
        """The message for a session whose value was dropped to make room or for being idle, or None."""
        with self._lock:
            return self._notices.get(session_id)

    def release(self, session_id: str) -> None:
        """Forget the session entirely (its value, files and any notice); e.g. when its browser tab closes."""
        with self._lock:
            had_value = self._take(session_id)
            self._notices.pop(session_id, None)
        if had_value:
            self._free([(session_id, None)])

    def clear(self) -> None:
        """Release every session (e.g. at shutdown: no parked file is left behind)."""
        with self._lock:
            ids = [*self._live, *self._parked]
        for session_id in ids:
            self.release(session_id)

    # ----- under the lock ----------------------------------------------------------------------------------------

    def _memory_bytes(self) -> int:
        return sum(e.size for e in self._live.values()) + sum(e.parked.memory_bytes for e in self._parked.values())

    def _disk_bytes(self) -> int:
        return sum(e.parked.disk_bytes for e in self._parked.values())

    def _take(self, session_id: str) -> bool:
        """Remove the session's value from memory and disk; whether it had one."""
        live = self._live.pop(session_id, None)
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            self._spiller.discard(parked.parked)
        return live is not None or parked is not None

    def _unpark(self, session_id: str, now: float, freed: list[tuple[str, str | None]]) -> T | None:
        """Read a parked session back into memory (None, and dropped with a notice, if its files cannot be read)."""
        parked = self._parked.pop(session_id).parked
        try:
            value = self._spiller.unpark(parked)
        except (OSError, ValueError):
            value = None
        self._spiller.discard(parked)
        if value is None:
            freed.append((session_id, "This session's tuned generator could not be read back from the server's disk. "
                                      "Give the photo again and press Invert."))
            return None
        self._live[session_id] = _Live(value, self._size_of(value), now)
        self._make_room(session_id, freed)
        return value

    def _make_room(self, keep: str, freed: list[tuple[str, str | None]]) -> None:
        """Park (or drop) the least recently used other sessions until memory is in bounds; then drop parked ones
        until the disk is in bounds."""
        def over() -> bool:
            return len(self._live) > self.max_sessions or self._memory_bytes() > self.max_bytes

        while over() and len(self._live) > 1:
            victim = next(sid for sid in self._live if sid != keep)
            entry = self._live.pop(victim)
            parked = self._park(victim, entry.value)
            if parked is None:
                freed.append((victim, self._drop_notice()))
            else:
                self._parked[victim] = _Parked(parked, entry.last_used)
        while self._parked and (self._memory_bytes() > self.max_bytes or self._disk_bytes() > self.max_disk_bytes):
            victim, entry = self._parked.popitem(last=False)
            self._spiller.discard(entry.parked)
            freed.append((victim, self._drop_notice()))

    def _park(self, session_id: str, value: T) -> ParkedValue | None:
        """`value` written to disk, or None when there is no spiller, no disk budget, or the write failed."""
        if self._spiller is None or self.max_disk_bytes == 0:
            return None
        try:
            return self._spiller.park(session_id, value)
        except OSError:  # e.g. the disk is full: the session is dropped as it would be without a spiller
            return None

    def _expire(self, now: float, freed: list[tuple[str, str | None]]) -> None:
        """Free the sessions unused for `idle_seconds`."""
        if self.idle_seconds is None:
            return
        limit = now - self.idle_seconds
        for session_id in [sid for sid, e in [*self._live.items(), *self._parked.items()] if e.last_used < limit]:
            self._take(session_id)
            freed.append((session_id, f"This session was not used for {_duration_text(self.idle_seconds)} and "
                                      "was freed. Give the photo again and press Invert."))

    def _drop_notice(self) -> str:
        return ("This session's tuned generator was freed to make room for other people (the server keeps "
                f"{self.max_sessions} session(s) and {format_bytes(self.max_bytes)} in memory"
                + (f", {format_bytes(self.max_disk_bytes)} on disk" if self._spiller is not None else "")
                + " at most). Give the photo again and press Invert.")

    # ----- outside the lock --------------------------------------------------------------------------------------

    def _free(self, freed: list[tuple[str, str | None]]) -> None:
        """Remember the notices of dropped sessions, then tell the release listeners."""
        with self._lock:
            for session_id, notice in freed:
                if notice is not None:
                    self._notices[session_id] = notice
            while len(self._notices) > self._max_notices:
                self._notices.popitem(last=False)
            listeners = list(self._release_listeners)
        for session_id, _ in freed:
            for listener in listeners:
                listener(session_id)


def _duration_text(seconds: float) -> str:
    """3600 -> '1 h', 90 -> '1.5 min', 45 -> '45 s' (for notices)."""
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
