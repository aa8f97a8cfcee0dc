"""An inspection split over processes and nodes: rank and world size from the launcher, as Lightning reads them.

Under ``torchrun`` (or SLURM's ``srun``) every process takes every ``world_size``-th input starting at its rank and
appends to its own journal in the shared output folder. Rank 0 checks and prepares the folder before the others
start, and writes the ranked results and the report once every process has finished (a gloo process group carries
those two steps). Alone, nothing of this happens.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment, TorchElasticEnvironment

T = TypeVar("T")
FINISH_TIMEOUT = timedelta(days=7)  # how long rank 0 waits for the slowest process at the end


class ShardError(ValueError):
    """What went wrong on rank 0 while preparing the run, raised on every rank."""


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: inputs ``rank``, ``rank + world_size``, ...; ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def take(self, inputs: Sequence[T]) -> list[T]:
        return list(inputs[self.rank :: self.world_size])

    def device(self) -> torch.device:
        """The GPU of this process's local rank when CUDA is available, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


def launcher_environment() -> ClusterEnvironment | None:
    """torchrun's or SLURM's environment if this process was launched by one with more than one process."""
    for environment in (TorchElasticEnvironment, SLURMEnvironment):
        if environment.detect():
            found = environment()
            if found.world_size() > 1:
                return found
    return None


class Coordinator:
    """The collective steps of a sharded run (none when alone)."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def first_then_others(self, action: Callable[[], T]) -> T:
        """``action`` on rank 0, then, if it succeeded, on the others; rank 0's ValueError is raised everywhere."""
        if self.shard.world_size == 1:
            return action()
        outcome: list[str | None] = [None]
        if self.shard.rank == 0:
            try:
                result = action()
            except ValueError as error:
                outcome[0] = str(error)
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise ShardError(outcome[0])
        return result if self.shard.rank == 0 else action()

    def wait_for_all(self) -> None:
        if self.shard.world_size > 1:
            dist.barrier()


@contextmanager
def coordinated() -> Iterator[Coordinator]:
    """This process's Coordinator; a gloo process group for its lifetime when launched as several processes."""
    environment = launcher_environment()
    if environment is None:
        yield Coordinator(Shard())
        return
    shard = Shard(environment.global_rank(), environment.world_size(), environment.local_rank())
    created = not dist.is_initialized()
    if created:
        os.environ.setdefault("MASTER_ADDR", environment.main_address)
        os.environ.setdefault("MASTER_PORT", str(environment.main_port))
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size, timeout=FINISH_TIMEOUT)
    try:
        yield Coordinator(shard)
    finally:
        if created:
            dist.destroy_process_group()
