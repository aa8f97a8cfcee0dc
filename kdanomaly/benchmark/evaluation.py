"""One evaluation pass per leaderboard row.

Anomalib learns the adaptive threshold and the normalisation on the validation set and scores the test set. When
the two are the same images (MVTec AD and the magnetic tiles: ``val_split_mode=same_as_test``), ``Engine.test``
after ``Engine.validate`` would run every model over the test images twice. :class:`ValidationOutputs` keeps
the validation pass's outputs and :func:`test_metrics` post-processes and scores them exactly as ``Engine.test``
does (the same post-processor and the same evaluator metrics), so each row costs one pass. A datamodule whose
validation images differ from its test images (``Folder``'s default split) is tested with ``Engine.test``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

from anomalib.data import AnomalibDataModule, Batch
from anomalib.engine import Engine
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class ValidationOutputs(Callback):
    """Keeps the batches (with predictions) of the last validation run and when its first batch started."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.first_batch_started: float | None = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the previous run's outputs."""
        del trainer, pl_module
        self.batches, self.first_batch_started = [], None

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        """Time stamp of the first batch: work before it (memory-bank fitting) counts as training."""
        del args, kwargs
        if self.first_batch_started is None:
            self.first_batch_started = time.perf_counter()

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any) -> None:
        """Keep the batch with the model's predictions (not yet normalised: that needs the whole pass)."""
        del trainer, pl_module, args
        self.batches.append(outputs)


def same_images(datamodule: AnomalibDataModule) -> bool:
    """True if the validation set holds exactly the test set's images, in the same order."""
    validation, test = datamodule.val_data.samples, datamodule.test_data.samples
    return list(validation.image_path) == list(test.image_path)


class _BatchMetric(Protocol):
    """What an Evaluator's test metric is: an :class:`anomalib.metrics.AnomalibMetric` and a torchmetrics Metric."""

    name: str

    def reset(self) -> None: ...

    def update(self, batch: Batch) -> None: ...

    def compute(self) -> Tensor: ...


def test_metrics(model: AnomalibModule, batches: list[Batch]) -> dict[str, float]:
    """The model's test metrics on ``batches``, post-processed with the thresholds of the validation run."""
    # Anomalib types the model's components as ``nn.Module | None`` and test_metrics as a ModuleList of nn.Module.
    metrics = cast(Sequence[_BatchMetric], cast(Evaluator, model.evaluator).test_metrics)
    for metric in metrics:
        metric.reset()
    for batch in batches:
        cast(PostProcessor, model.post_processor).post_process_batch(batch)
        for metric in metrics:
            metric.update(batch)
    return {metric.name: float(metric.compute()) for metric in metrics}


def evaluate(
    engine: Engine, model: AnomalibModule, datamodule: AnomalibDataModule, outputs: ValidationOutputs
) -> Mapping[str, float]:
    """Validate (thresholds, normalisation; memory-bank models fit first) and return the test metrics."""
    engine.validate(model, datamodule=datamodule, verbose=False)
    if same_images(datamodule):
        return test_metrics(model, outputs.batches)
    return engine.test(model, datamodule=datamodule, verbose=False)[0]


class FittedRun(NamedTuple):
    """A fitted benchmark model: its engine, validation outputs, test metrics and training seconds."""

    engine: Engine
    outputs: ValidationOutputs
    metrics: Mapping[str, float]
    train_seconds: float


def cpu_engine(work_dir: Path, **trainer_arguments: Any) -> Engine:
    """An Anomalib Engine on one CPU device without logger or progress bar, writing under ``work_dir``."""
    return Engine(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=work_dir,
        **trainer_arguments,
    )  # fmt: skip


def fit_and_evaluate(
    model: AnomalibModule,
    datamodule: AnomalibDataModule,
    work_dir: Path,
    resume_from: Path | None = None,
    **trainer_arguments: Any,
) -> FittedRun:
    """Fit on CPU (no logger, no progress bar) and :func:`evaluate`; training time runs until the first
    validation batch (memory-bank fitting before it counts as training, the evaluation pass does not).

    ``resume_from``: a Lightning checkpoint (weights, optimiser state, step) that the fit continues up to the
    trainer's ``max_steps``."""
    outputs = ValidationOutputs()
    engine = cpu_engine(work_dir, callbacks=[outputs], **trainer_arguments)
    started = time.perf_counter()
    engine.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    metrics = evaluate(engine, model, datamodule, outputs)
    return FittedRun(engine, outputs, metrics, (outputs.first_batch_started or time.perf_counter()) - started)
