"""Under DDP: exact evaluation (every validation/test image scored by exactly one process) and batch-wide losses.

Lightning gives validation and test loaders a ``DistributedSampler``, which pads the last rank with repeats of the
first images so that every rank has as many batches; an AUROC over the gathered predictions then counts those images
twice. Our evaluation has no per-step collective (Anomalib's metrics are synchronised once, at the epoch end), so
uneven ranks are safe, and this callback hands the datamodule's evaluation loaders Lightning's
``UnrepeatedDistributedSamplerWrapper`` instead (Lightning leaves a loader alone once it has a distributed sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from torch import distributed
from torch.distributed.nn.functional import all_gather
from torch.utils.data import DataLoader, Sampler, SequentialSampler

EVALUATION_LOADERS = {"val_dataloader": RunningStage.VALIDATING, "test_dataloader": RunningStage.TESTING}


class UnrepeatedEvaluation(Callback):
    """Under more than one process, shard the datamodule's validation and test images without repeats."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Wrap the datamodule's evaluation loader hooks (once) when the run is distributed."""
        del pl_module, stage
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's DataConnector, undeclared
        if trainer.world_size == 1 or datamodule is None:
            return
        for hook, mode in EVALUATION_LOADERS.items():
            original = getattr(datamodule, hook)
            if not getattr(original, "unrepeated", False):
                setattr(datamodule, hook, _unrepeated(original, trainer, mode))


def _unrepeated(make_loaders: Callable[[], Any], trainer: Trainer, mode: RunningStage) -> Callable[[], Any]:
    """``make_loaders`` whose DataLoaders each see only this rank's share of the images, none twice."""

    def shard(loader: Any) -> Any:
        if not isinstance(loader, DataLoader):
            return loader
        return _update_dataloader(loader, _share(loader.sampler, trainer), mode=mode)

    def wrapped() -> Any:
        loaders = make_loaders()
        return [shard(loader) for loader in loaders] if isinstance(loaders, list | tuple) else shard(loaders)

    wrapped.unrepeated = True  # type: ignore[attr-defined]
    return wrapped


def evaluation_sampler(dataset: Sized, trainer: Trainer) -> Sampler[int] | None:
    """For a validation loader passed to ``fit`` directly: this rank's share of ``dataset`` without repeats under
    DDP; None (every image, in order) in one process."""
    return None if trainer.world_size == 1 else _share(SequentialSampler(dataset), trainer)


def _share(sampler: Sampler[int] | Iterable[int], trainer: Trainer) -> Sampler[int]:
    """This rank's indices of ``sampler`` (every ``world_size``-th from its rank), none repeated."""
    rank, world_size = trainer.global_rank, trainer.world_size
    return UnrepeatedDistributedSamplerWrapper(sampler, num_replicas=world_size, rank=rank, shuffle=False)


def gathered(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated over every process along dim 0 (gradients flow back to each process's own rows), so
    that a contrastive loss sees the whole global batch as negatives; the tensors themselves in one process.

    Every process computes the same global loss and gets ``world_size`` times its rows' gradient back; DDP's gradient
    averaging divides that out, so the update equals one process's on the whole batch.
    """
    if _processes() == 1:
        return tensors
    return tuple(torch.cat(all_gather(tensor)) for tensor in tensors)


def match_rank_zero(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite each tensor in place with rank 0's value (nothing in one process).

    DDP copies rank 0's buffers into every process before each training forward, so after the last step each
    process holds BatchNorm statistics updated by its own batch; evaluating with them would not be the checkpoint's
    model (rank 0's).
    """
    if _processes() > 1:
        for tensor in tensors:
            distributed.broadcast(tensor, src=0)


def objects_of_every_process(items: list[Any]) -> list[Any]:
    """``items`` (picklable) of every process, in rank order; ``items`` itself in one process."""
    if _processes() == 1:
        return items
    per_process: list[list[Any] | None] = [None] * _processes()
    distributed.all_gather_object(per_process, items)
    return [item for items_of_one in per_process for item in items_of_one or []]


def _processes() -> int:
    """The number of processes in the torch.distributed group (1 when there is none)."""
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1
