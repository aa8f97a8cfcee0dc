"""Training under Lightning DDP: real processes on this CPU (gloo), compared with one process."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import _suggested_max_num_threads
from torch import distributed, multiprocessing
from torch.nn.parallel import DistributedDataParallel

from kdanomaly.models.components.distributed import gathered, match_rank_zero
from kdanomaly.models.recognizer.loss import RecognizerLoss
from tests.support import CATEGORY, DDP_ON_TWO_CPU_PROCESSES, IMAGE_SIZE, TrainedRun, run_command, synthetic_datamodule

BATCH, FEATURES, EMBEDDING, CLASSES = 8, 12, 6, 3


def _recognizer_problem() -> tuple[torch.nn.Module, RecognizerLoss, list[torch.Tensor], torch.Tensor]:
    """A linear embedder, the recognizer's loss, three views of a batch and their labels (same on every process)."""
    torch.manual_seed(0)
    embedder, loss = torch.nn.Linear(FEATURES, EMBEDDING), RecognizerLoss(EMBEDDING, CLASSES)
    views = [torch.randn(BATCH, FEATURES) for _ in range(3)]
    return embedder, loss, views, torch.arange(BATCH) % CLASSES


def _loss_and_gradient_on_a_rank(rank: int, world_size: int, init_file: str, results: str) -> None:
    """One DDP process: its half of the batch, the recognizer loss over the gathered embeddings, backward."""
    distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    embedder, loss, views, labels = _recognizer_problem()
    model = DistributedDataParallel(embedder)
    mine = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
    embedded = [model(view[mine]) for view in views]
    value = loss(*gathered(*embedded, labels[mine]))["loss"]
    value.backward()
    torch.save({"loss": value.detach(), "grad": embedder.weight.grad}, f"{results}-{rank}.pt")
    distributed.destroy_process_group()


def test_two_processes_compute_the_global_batch_loss_and_gradient_of_one_process(tmp_path: Path) -> None:
    embedder, loss, views, labels = _recognizer_problem()
    single = loss(*(embedder(view) for view in views), labels)["loss"]
    single.backward()
    assert embedder.weight.grad is not None
    results = str(tmp_path / "rank")
    multiprocessing.spawn(_loss_and_gradient_on_a_rank, args=(2, str(tmp_path / "init"), results), nprocs=2)
    for rank in range(2):
        ranked = torch.load(f"{results}-{rank}.pt")
        torch.testing.assert_close(ranked["loss"], single.detach())
        torch.testing.assert_close(ranked["grad"], embedder.weight.grad)


def _batchnorm_statistics_after_matching(rank: int, world_size: int, init_file: str, results: str) -> None:
    """One process: a BatchNorm that saw this process's own batch, then given rank 0's buffers."""
    distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    norm = torch.nn.BatchNorm1d(FEATURES)
    norm(torch.randn(BATCH, FEATURES) + rank)
    before = norm.running_mean.clone()
    match_rank_zero(norm.buffers())
    torch.save({"before": before, "after": norm.running_mean}, f"{results}-{rank}.pt")
    distributed.destroy_process_group()


def test_match_rank_zero_gives_every_process_the_buffers_of_rank_zero(tmp_path: Path) -> None:
    results = str(tmp_path / "rank")
    multiprocessing.spawn(_batchnorm_statistics_after_matching, args=(2, str(tmp_path / "init"), results), nprocs=2)
    zero, one = (torch.load(f"{results}-{rank}.pt") for rank in range(2))
    assert not torch.allclose(zero["before"], one["before"])
    torch.testing.assert_close(zero["after"], zero["before"], rtol=0, atol=0)
    torch.testing.assert_close(one["after"], zero["before"], rtol=0, atol=0)


MODEL_AT_IMAGE_SIZE = f"""
model:
  class_path: kdanomaly.KDAnomaly
  init_args:
    visualizer: false
    pre_processor:
      class_path: anomalib.pre_processing.PreProcessor
      init_args:
        transform:
          class_path: torchvision.transforms.v2.Compose
          init_args:
            transforms:
              - class_path: torchvision.transforms.v2.Resize
                init_args: {{size: [{IMAGE_SIZE}, {IMAGE_SIZE}], antialias: true}}
              - class_path: torchvision.transforms.v2.Normalize
                init_args: {{mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
"""


@contextmanager
def threads_of_one_ddp_process(processes: int) -> Iterator[None]:
    """Torch's thread count set as Lightning sets it in each of ``processes`` DDP processes on this machine."""
    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:  # Lightning leaves the count alone then
        torch.set_num_threads(_suggested_max_num_threads(processes))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")


def test_kdanomaly_trains_under_ddp_to_one_checkpoint_with_exact_metrics_and_one_process_quality(
    synthetic_root: Path, trained: TrainedRun, tmp_path: Path
) -> None:
    from anomalib.engine import Engine

    from kdanomaly import KDAnomaly

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    normal = sorted((data / CATEGORY / "train" / "good").glob("*.png"))[0]
    # 31 test images: Lightning's DistributedSampler would score one of them twice
    shutil.copy(normal, data / CATEGORY / "test" / "good" / f"extra_{normal.name}")
    config = tmp_path / "model.yaml"
    config.write_text(MODEL_AT_IMAGE_SIZE)
    output = run_command(
        "train", "-c", config, "--data", "MVTecAD", "--data.root", data, "--data.category", CATEGORY,
        "--data.num_workers", "0", "--data.train_batch_size", "4", "--data.eval_batch_size", "1",
        "--trainer.max_epochs", "24", "--trainer.check_val_every_n_epoch", "24", *DDP_ON_TWO_CPU_PROCESSES,
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", tmp_path / "logs",
        "--default_root_dir", tmp_path / "run", "--seed_everything", "0",
    )  # fmt: skip
    assert "distributed_backend=gloo" in output and "MEMBER: 2/2" in output
    checkpoints = list((tmp_path / "run").rglob("*.ckpt"))
    assert len(checkpoints) == 1
    with next((tmp_path / "logs").rglob("metrics.csv")).open() as rows:
        reported = next(row for row in csv.DictReader(rows) if row["image_AUROC"])
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor((IMAGE_SIZE, IMAGE_SIZE)), visualizer=False)
    engine = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path / "single")
    # Image by image and with as many threads in both runs: the F1 thresholds sit exactly on one image's (one
    # pixel's) score, so a last-bit difference from another batch composition or kernel split would flip it.
    with threads_of_one_ddp_process(2):
        datamodule = synthetic_datamodule(data, 1)
        one_process = engine.test(model, datamodule=datamodule, ckpt_path=checkpoints[0], verbose=False)
    for name in METRICS:  # the two processes' scores gathered once each: the metrics of one process
        assert float(reported[name]) == pytest.approx(one_process[0][name], abs=1e-6), name
    for name in ("image_AUROC", "pixel_AUROC"):  # global batch 2 x 4 = one process's 8, same epochs
        assert float(reported[name]) >= trained.metrics[name] - 0.02, (name, reported[name], trained.metrics[name])
