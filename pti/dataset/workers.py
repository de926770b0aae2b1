"""The processes of a dataset run: one without `torchrun`, or one per rank under it, each on its own device.

Work is shared dynamically: every rank claims the next image with an atomic counter in torch.distributed's key-value
store (the one `torchrun` sets up), so no image is claimed twice and a rank that finishes early takes more instead
of waiting. The per-image records are gathered on rank 0 at the end. A single process is the same code with a
`HashStore` and one rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# How long a rank waits at the final gather for the others (they finish within about one image of each other).
GATHER_TIMEOUT = timedelta(hours=2)


@dataclass
class Workers:
    """This process's place among the ranks of a dataset run, and the shared counters."""

    rank: int  # global rank (0 .. world_size - 1)
    world_size: int
    local_rank: int  # rank on this machine: picks the GPU
    device: torch.device
    store: dist.Store  # shared key-value store (a HashStore for a single process)
    distributed: bool  # whether a process group was set up (under torchrun)
    run_key: str  # prefix of this run's keys in the store

    def claim(self) -> int:
        """The index of the next unclaimed image (counts past the end once all are claimed)."""
        return self.store.add(f"{self.run_key}/next", 1) - 1

    def count_finished(self, increment: int = 1) -> int:
        """Add `increment` to the images finished by all ranks; returns the new total (0: just read it)."""
        return self.store.add(f"{self.run_key}/finished", increment)

    def request_stop(self) -> None:
        """Ask every rank to stop after its current image."""
        self.store.set(f"{self.run_key}/stop", "1")

    def stop_requested(self) -> bool:
        """Whether any rank asked to stop."""
        return self.store.check([f"{self.run_key}/stop"])

    def gather(self, value: object) -> list | None:
        """Every rank's `value` (picklable), in rank order, on rank 0; None on the other ranks."""
        if not self.distributed:
            return [value]
        gathered = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def close(self) -> None:
        """Tear the process group down (if one was set up)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def under_torchrun() -> bool:
    """Whether this process was started by `torchrun` (or another launcher that sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank_device(requested: str | None, local_rank: int) -> torch.device:
    """This rank's device: `requested` as given when it names an index, else LOCAL_RANK's GPU for 'cuda' (and by
    default when CUDA is available), else the CPU."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def start_workers(requested_device: str | None) -> Workers:
    """Join the run: under `torchrun` set up the process group (NCCL on GPUs, gloo on the CPU) through its
    rendezvous; otherwise a single rank with a local store."""
    if not under_torchrun():
        device = rank_device(requested_device, 0)
        return Workers(rank=0, world_size=1, local_rank=0, device=device, store=dist.HashStore(), distributed=False,
                       run_key="run")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(requested_device, local_rank)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} would run on {device}, but this machine has "
                             f"{torch.cuda.device_count()} GPU(s): start at most that many processes per machine "
                             "(torchrun --nproc-per-node)")
        torch.cuda.set_device(device)
    store, rank, world_size = next(dist.rendezvous("env://"))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                            world_size=world_size, timeout=GATHER_TIMEOUT)
    # torchrun's agent store outlives a restart of the workers: keys are per run id and restart
    run_key = f"pti-invert-dataset/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/" \
              f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return Workers(rank=rank, world_size=world_size, local_rank=local_rank, device=device, store=store,
                   distributed=True, run_key=run_key)
