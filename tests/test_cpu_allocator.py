"""pti.cpu_allocator: freed memory is reused without page faults, and given back on request (glibc only).

The settings are process-wide, so every check that applies them runs in a fresh interpreter (the default
allocator is the baseline); the entry-point check replaces them with a recorder.
"""
from __future__ import annotations

import json
import platform
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pti.cli
import pti.cpu_allocator

REPO = Path(__file__).resolve().parent.parent
PAGES_PER_MB = 2**20 // 4096

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings are for glibc on Linux")


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter (repository on the path); it prints one JSON object, returned here."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


PAGE_FAULTS_OF_TEMPORARIES = """
    import json, resource, threading
    import torch
    from pti.cpu_allocator import keep_freed_memory
    kept = keep_freed_memory() if KEEP else None
    x = torch.ones(MEGABYTES // 4, 2**20)  # every temporary below is as large
    faults = []

    def faults_of_temporaries():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(15):
            y = x * 2
            z = y + 1
            del y, z
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def measure():
        faults_of_temporaries()  # the first round grows the heap
        faults.append(faults_of_temporaries())

    if IN_THREAD:  # as the app runs its jobs
        worker = threading.Thread(target=measure)
        worker.start()
        worker.join()
    else:
        measure()
    print(json.dumps({"kept": kept, "faults": faults[0]}))
"""


def temporaries_report(keep: bool, megabytes: int, in_thread: bool) -> dict:
    """Page faults of thirty temporaries of `megabytes` after a warm-up round, with or without keep_freed_memory."""
    code = PAGE_FAULTS_OF_TEMPORARIES.replace("KEEP", str(keep)).replace("MEGABYTES", str(megabytes))
    return run_python(code.replace("IN_THREAD", str(in_thread)))


CASES = [pytest.param(64, False, id="64MB-main-thread"),
         pytest.param(96, True, id="96MB-worker-thread")]  # over the 64 MB a thread's own arena could hold


def transparent_huge_pages_always() -> bool:
    """Whether the kernel backs large mappings with 2 MB pages by default (then far fewer faults happen at all)."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("megabytes, in_thread", CASES)
def test_keep_freed_memory_reuses_large_temporaries_without_faults(megabytes, in_thread):
    default = temporaries_report(keep=False, megabytes=megabytes, in_thread=in_thread)
    kept = temporaries_report(keep=True, megabytes=megabytes, in_thread=in_thread)
    if not transparent_huge_pages_always():  # the baseline the setting is for: every temporary faults in afresh
        assert default["faults"] > 0.9 * 30 * megabytes * PAGES_PER_MB
    assert kept["kept"] is True
    # (glibc's aligned allocation now and then places one temporary in fresh pages: seen once in 30 at most)
    assert kept["faults"] < 0.1 * default["faults"]


def test_release_freed_memory_gives_the_kept_memory_back():
    report = run_python("""
        import json
        import torch
        from pti.cpu_allocator import keep_freed_memory, release_freed_memory

        def resident_mb():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * 4096 / 2**20

        keep_freed_memory()
        baseline = resident_mb()
        big = torch.ones(64, 2**20)  # 256 MB
        del big
        kept = resident_mb()
        released = release_freed_memory()
        print(json.dumps({"baseline": baseline, "kept": kept, "after": resident_mb(), "released": released}))
    """)
    assert report["kept"] > report["baseline"] + 200  # freed, but still held for reuse
    assert report["released"] is True
    assert report["after"] < report["kept"] - 200


def test_python_m_pti_sets_the_allocator_before_the_command_runs(monkeypatch):
    """`python -m pti` (the process entry point, not `pti.cli.main`, which tests and callers use in-process)."""
    calls = []
    monkeypatch.setattr(pti.cpu_allocator, "keep_freed_memory", lambda: calls.append("allocator") or True)
    monkeypatch.setattr(pti.cli, "main", lambda: calls.append("command") or 0)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("pti", run_name="__main__")
    assert exit_info.value.code == 0
    assert calls == ["allocator", "command"]
