"""The per-session store: bounds in number and bytes, LRU order, eviction notices, release, no sharing."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from pti.session_store import SessionStore, SessionTooLargeError, estimate_nbytes, format_bytes


def sized(n: int) -> bytes:
    """A value whose size (through `len`) is n bytes."""
    return bytes(n)


def make_store(max_sessions: int = 3, max_bytes: int = 1000, **kwargs) -> SessionStore[bytes]:
    """A store that measures values with len()."""
    return SessionStore(max_sessions=max_sessions, max_bytes=max_bytes, size_of=len, **kwargs)


def test_get_returns_each_sessions_own_value():
    store = make_store()
    a, b = sized(10), sized(20)
    store.put("alice", a)
    store.put("bob", b)
    assert store.get("alice") is a and store.get("bob") is b
    assert store.get("carol") is None
    assert len(store) == 2 and store.total_bytes == 30


def test_count_bound_evicts_least_recently_used_and_leaves_a_notice():
    store = make_store(max_sessions=2)
    store.put("alice", sized(1))
    store.put("bob", sized(1))
    store.get("alice")  # alice is now the most recently used, bob the least
    evicted = store.put("carol", sized(1))
    assert evicted == ["bob"]
    assert "bob" not in store and "alice" in store and "carol" in store
    notice = store.eviction_notice("bob")
    assert notice is not None and "freed" in notice and "Invert" in notice
    assert store.eviction_notice("alice") is None


def test_byte_bound_evicts_as_many_as_needed():
    store = make_store(max_sessions=10, max_bytes=100)
    for name in ("a", "b", "c", "d"):
        store.put(name, sized(25))
    assert store.total_bytes == 100
    evicted = store.put("e", sized(60))
    assert evicted == ["a", "b", "c"]
    assert store.total_bytes == 85 and len(store) == 2


def test_replacing_a_value_does_not_evict_others_needlessly():
    store = make_store(max_sessions=2, max_bytes=100)
    store.put("a", sized(50))
    store.put("b", sized(40))
    assert store.put("b", sized(50)) == []
    assert store.total_bytes == 100


def test_value_larger_than_budget_is_refused_with_a_message():
    store = make_store(max_bytes=100)
    store.put("a", sized(10))
    with pytest.raises(SessionTooLargeError, match="more than the server's whole budget"):
        store.put("b", sized(101))
    assert "a" in store  # nothing was evicted for a value that cannot fit anyway


def test_release_frees_the_value_and_the_notice_and_calls_back():
    released = []
    store = make_store(max_sessions=1)
    store.add_release_listener(released.append)
    store.put("a", sized(3))
    store.put("b", sized(4))  # evicts a
    assert released == ["a"]
    assert store.eviction_notice("a") is not None
    store.release("a")
    assert store.eviction_notice("a") is None
    store.release("b")
    assert released == ["a", "b"] and len(store) == 0
    store.release("never-seen")  # harmless


def test_putting_again_clears_the_notice():
    store = make_store(max_sessions=1)
    store.put("a", sized(1))
    store.put("b", sized(1))
    store.put("a", sized(1))
    assert store.eviction_notice("a") is None and store.eviction_notice("b") is not None


def test_notices_are_bounded():
    store = make_store(max_sessions=1, max_notices=3)
    for i in range(10):
        store.put(f"s{i}", sized(1))
    remembered = [i for i in range(10) if store.eviction_notice(f"s{i}") is not None]
    assert remembered == [6, 7, 8]


def test_concurrent_puts_stay_within_bounds():
    store = make_store(max_sessions=5, max_bytes=10_000)

    def worker(k: int) -> None:
        for i in range(200):
            store.put(f"w{k}-{i % 7}", sized(100))
            store.get(f"w{(k + 1) % 4}-{i % 7}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 5 and store.total_bytes == 500


def test_invalid_bounds_are_refused():
    with pytest.raises(ValueError, match="max_sessions"):
        make_store(max_sessions=0)
    with pytest.raises(ValueError, match="max_bytes"):
        make_store(max_bytes=0)


@dataclass(frozen=True)
class Record:
    generator: torch.nn.Module
    pivot: torch.Tensor
    image: Image.Image
    extra: dict


def test_estimate_nbytes_counts_tensors_modules_images_and_shared_storage_once():
    module = torch.nn.Linear(10, 20)  # 200 weights + 20 biases, float32
    module.register_buffer("running", torch.zeros(5, dtype=torch.float64))
    pivot = torch.zeros(1, 8, 32)
    image = Image.new("RGB", (16, 8))
    array = np.zeros((3, 4), dtype=np.float32)
    record = Record(module, pivot, image, {"array": array, "same_pivot": pivot, "view": pivot[0]})
    expected = (200 + 20) * 4 + 5 * 8 + 8 * 32 * 4 + 16 * 8 * 3 + 3 * 4 * 4
    assert estimate_nbytes(record) == expected


def test_store_with_default_size_counts_a_real_generator(tiny_generator):
    n_params = sum(p.numel() for p in tiny_generator.parameters()) + sum(b.numel() for b in tiny_generator.buffers())
    store: SessionStore[torch.nn.Module] = SessionStore(max_sessions=4, max_bytes=10 * n_params * 4)
    store.put("a", tiny_generator)
    assert store.total_bytes == n_params * 4  # float32


@pytest.mark.parametrize("count, text", [(5, "5 B"), (1536, "1.5 KiB"), (3 * 1024**2, "3.0 MiB"),
                                         (5 * 1024**3, "5.0 GiB")])
def test_format_bytes(count, text):
    assert format_bytes(count) == text


@dataclass(frozen=True)
class FakeParked:
    """What FakeSpiller keeps in memory for a parked value."""

    key: int
    disk_bytes: int
    memory_bytes: int = 0


class FakeSpiller:
    """Parks byte strings in a dict standing in for the disk; counts its calls; can be made to fail."""

    def __init__(self) -> None:
        self.disk: dict[int, bytes] = {}
        self.parks = 0
        self.fail_with: Exception | None = None

    def park(self, session_id: str, value: bytes) -> FakeParked:
        if self.fail_with is not None:
            raise self.fail_with
        self.parks += 1
        self.disk[self.parks] = value
        return FakeParked(self.parks, len(value))

    def unpark(self, parked: FakeParked) -> bytes:
        return self.disk[parked.key]

    def discard(self, parked: FakeParked) -> None:
        del self.disk[parked.key]


def spilling_store(spiller: FakeSpiller, **kwargs) -> SessionStore[bytes]:
    options = {"max_sessions": 2, "max_bytes": 1000, "max_disk_bytes": 100, **kwargs}
    return SessionStore(size_of=len, spiller=spiller, **options)


def test_sessions_that_leave_memory_are_parked_and_come_back():
    spiller = FakeSpiller()
    store = spilling_store(spiller)
    values = {name: sized(10 + i) for i, name in enumerate(["alice", "bob", "carol"])}
    for name, value in values.items():
        assert store.put(name, value) == []  # nobody dropped
    assert len(store) == 2 and store.parked_sessions == 1 and store.disk_bytes == 10  # alice on disk
    assert "alice" in store and store.eviction_notice("alice") is None
    assert store.get("alice") == values["alice"]  # read back; bob, now the least recently used, goes to disk
    assert store.parked_sessions == 1 and store.disk_bytes == 11 and list(spiller.disk.values()) == [values["bob"]]
    assert store.get("bob") == values["bob"] and store.get("carol") == values["carol"]


def test_parked_sessions_are_dropped_oldest_first_when_the_disk_budget_is_spent():
    spiller = FakeSpiller()
    store = spilling_store(spiller, max_sessions=1, max_disk_bytes=25)
    for name in ("a", "b", "c", "d"):
        store.put(name, sized(10))
    # in memory: d; on disk: c and b (20 bytes); a, the oldest, had to go when c was parked
    assert store.parked_sessions == 2 and store.disk_bytes == 20
    assert store.get("a") is None
    assert "25 B on disk" in store.eviction_notice("a")
    assert store.get("b") == sized(10) and store.get("c") == sized(10)
    assert len(spiller.disk) == 2  # what was dropped or read back is deleted


def test_without_a_disk_budget_sessions_are_dropped_as_before():
    spiller = FakeSpiller()
    store = spilling_store(spiller, max_sessions=1, max_disk_bytes=0)
    store.put("a", sized(1))
    assert store.put("b", sized(1)) == ["a"] and spiller.parks == 0


def test_a_failed_write_drops_the_session_with_the_notice():
    spiller = FakeSpiller()
    spiller.fail_with = OSError("No space left on device")
    store = spilling_store(spiller, max_sessions=1)
    store.put("a", sized(1))
    assert store.put("b", sized(1)) == ["a"] and store.eviction_notice("a") is not None


def test_released_and_idle_sessions_leave_memory_and_disk():
    spiller = FakeSpiller()
    now = [0.0]
    released = []
    store = spilling_store(spiller, max_sessions=1, idle_seconds=3600, clock=lambda: now[0])
    store.add_release_listener(released.append)
    store.put("a", sized(5))
    store.put("b", sized(6))  # a parked
    store.release("a")
    assert spiller.disk == {} and released == ["a"] and "a" not in store
    now[0] = 1000.0
    store.put("c", sized(7))  # b parked at t=0 (its last use), c at t=1000
    now[0] = 3601.0
    assert store.get("c") == sized(7)  # c was used 2601 s ago: kept; b, idle for 3601 s, is freed
    assert "b" not in store and spiller.disk == {} and released == ["a", "b"]
    assert store.eviction_notice("b") == ("This session was not used for 1 h and was freed. Give the photo again "
                                          "and press Invert.")
    store.clear()
    assert len(store) == 0 and released == ["a", "b", "c"]


def test_parked_remainders_count_against_memory():
    class HeavyRemainder(FakeSpiller):
        def park(self, session_id, value):
            parked = super().park(session_id, value)
            return FakeParked(parked.key, parked.disk_bytes, memory_bytes=300)

    store = spilling_store(HeavyRemainder(), max_sessions=1, max_bytes=700, max_disk_bytes=10_000)
    for name in ("a", "b", "c"):
        store.put(name, sized(100))
    # two parked remainders (600) + c (100) fit in 700; a third remainder would not: a is dropped for d
    assert store.total_bytes == 700 and store.parked_sessions == 2
    assert store.put("d", sized(100)) == ["a"] and store.total_bytes == 700


def test_concurrent_use_with_parking_keeps_every_value():
    spiller = FakeSpiller()
    store = spilling_store(spiller, max_sessions=3, max_disk_bytes=10_000)
    errors = []

    def worker(k: int) -> None:
        for i in range(100):
            name = f"w{k}-{i % 5}"
            store.put(name, name.encode())
            got = store.get(name)
            if got != name.encode():
                errors.append((name, got))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store) == 3 and store.parked_sessions == 17
    assert all(store.get(f"w{k}-{i}") == f"w{k}-{i}".encode() for k in range(4) for i in range(5))
