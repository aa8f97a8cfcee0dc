"""Few-shot defect recognition on NEU (whole images, 6 classes), against a cross-entropy baseline.

    python -m benchmarks.fewshot_neu --data ../shared/datasets/neu_det/IMAGES --out benchmarks/results/fewshot_neu.json

(a) novel classes: train on patches, inclusion, rolled-in_scale; enrol k = 1, 3, 5 random references of
    crazing, scratches, pitted_surface and classify every other image of those three; mean and standard deviation
    over ``--draws`` reference draws. (b) small data: train on 10 / 20 / 50 images per class of all six, enrol the
    same training images, classify the rest. Every configuration is run for the recognizer (NT-Xent + ArcFace;
    matched in the PrototypeMemory on its pooled backbone features, ``recognizer/backbone``, and on its 128-d
    projection, ``recognizer/projection``) and for the baseline (same backbone, augmentation and budget, trained
    with cross entropy; its pooled backbone features matched the same way); ``pretrained`` matches the untrained
    ImageNet backbone's pooled features. Results are written after each trained model; ``--resume`` keeps those
    already in ``--out`` (same settings; ``--models`` may pick a subset at each run) and runs the rest, with the
    same training images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.report import continued_report, run_header
from kdanomaly.data.labelled_images import LabelledImages, list_labelled_images, load_images
from kdanomaly.memory import PrototypeMemory
from kdanomaly.models.recognizer import FewShotRecognizer

BASE = ["inclusion", "patches", "rolled-in_scale"]
NOVEL = ["crazing", "pitted_surface", "scratches"]


class CrossEntropyBaseline(LightningModule):
    """The recognizer's backbone and augmentation with a linear softmax head; embeddings are pooled features."""

    def __init__(self, class_names: list[str], backbone: str, learning_rate: float = 5e-4) -> None:
        super().__init__()
        reference = FewShotRecognizer(class_names, backbone)
        self.backbone, self.views, self.normalize = reference.model.backbone, reference.views, reference.normalize
        self.head = nn.Linear(self.backbone.num_features, len(class_names))
        self.learning_rate = learning_rate

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Unit pooled backbone features in eval mode, in batches."""
        self.eval()
        return torch.cat(
            [F.normalize(self.backbone(self.normalize(images[i : i + batch_size])), dim=1)
             for i in range(0, len(images), batch_size)]
        )  # fmt: skip

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], *args: Any) -> torch.Tensor:
        images, labels = batch
        stacked = torch.cat([images, self.views(images), self.views(images)])
        logits = self.head(self.backbone(self.normalize(stacked).contiguous(memory_format=torch.channels_last)))
        return F.cross_entropy(logits, labels.repeat(3))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def embeddings_of(model: LightningModule, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The embeddings each trained model is evaluated on: the recognizer's on both of its ``match_on`` choices."""
    if not isinstance(model, FewShotRecognizer):
        return {"": model.embed(images)}
    variants = {}
    for match_on in ("backbone", "projection"):
        model.match_on = match_on
        variants[f"/{match_on}"] = model.embed(images)
    return variants


def train(
    model: LightningModule, images: torch.Tensor, labels: torch.Tensor, seed: int, epochs: int, steps: int | None = None
) -> tuple[float, int]:
    """Fit ``model`` (batch 32, shuffled) for ``epochs``, or for ``steps`` optimiser steps if given.

    Returns the wall time in seconds and the number of optimiser steps taken.
    """
    seed_everything(seed, workers=True)
    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True, drop_last=len(images) > 32)
    budget = {"max_epochs": epochs} if steps is None else {"max_epochs": -1, "max_steps": steps}
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **budget)
    started = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - started, trainer.global_step


def accuracy(embeddings: torch.Tensor, labels: list[str], references: np.ndarray, queries: np.ndarray) -> float:
    """Accuracy of the memory's mean-similarity rule: ``references`` enrolled, ``queries`` classified."""
    memory = PrototypeMemory(embeddings.shape[1])
    memory.add(embeddings[references], [labels[i] for i in references])
    predicted = memory.predict(embeddings[queries]).labels
    return float(np.mean([p == labels[i] for p, i in zip(predicted, queries, strict=True)]))


def kshot_draws(
    embeddings: torch.Tensor, labels: list[str], classes: list[str], k: int, draws: int, seed: int
) -> list[float]:
    """Accuracy over ``draws`` random choices of ``k`` references per class of ``classes``; the rest are queries."""
    rng = np.random.default_rng(seed)
    by_class = {name: np.flatnonzero(np.asarray(labels) == name) for name in classes}
    results = []
    for _ in range(draws):
        references = np.concatenate([rng.choice(rows, k, replace=False) for rows in by_class.values()])
        queries = np.setdiff1d(np.concatenate(list(by_class.values())), references)
        results.append(accuracy(embeddings, labels, references, queries))
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(100 * float(np.mean(values)), 2), "std": round(100 * float(np.std(values)), 2)}


MODELS = ("recognizer", "cross_entropy")


def models(class_names: list[str], backbone: str, names: list[str]) -> dict[str, LightningModule]:
    """The trained models of ``names`` (of MODELS), in that order."""
    build = {"recognizer": FewShotRecognizer, "cross_entropy": CrossEntropyBaseline}
    return {name: build[name](class_names, backbone) for name in names}


def novel_classes(data: LabelledImages, images: torch.Tensor, args: argparse.Namespace) -> dict[str, object]:
    """Protocol (a)."""
    base = np.flatnonzero(np.isin(data.labels, BASE))
    novel = np.flatnonzero(np.isin(data.labels, NOVEL))
    base_labels = torch.tensor([BASE.index(data.labels[i]) for i in base])
    novel_labels = [data.labels[i] for i in novel]
    results: dict[str, object] = {}
    # An untrained baseline embeds the ImageNet backbone's pooled features, normalised like the others.
    candidates = {"pretrained": (CrossEntropyBaseline(BASE, args.backbone), 0.0)}
    for name, model in models(BASE, args.backbone, args.models).items():
        candidates[name] = (model, train(model, images[base], base_labels, args.seed, args.epochs)[0])
    for name, (model, seconds) in candidates.items():
        for variant, embeddings in embeddings_of(model, images[novel]).items():
            results[name + variant] = {"train_seconds": round(seconds, 1)} | {
                f"k={k}": summary(kshot_draws(embeddings, novel_labels, NOVEL, k, args.draws, args.seed))
                for k in (1, 3, 5)
            }
    return results


def small_data(data: LabelledImages, images: torch.Tensor, args: argparse.Namespace, report: dict) -> None:
    """Protocol (b), into ``report["small"]``; ``args.out`` is rewritten after each trained model."""
    classes = data.classes
    rng = np.random.default_rng(args.seed)
    results = report.setdefault("small", {})
    for per_class in args.per_class:
        train_rows = np.concatenate(
            [rng.choice(np.flatnonzero(np.asarray(data.labels) == name), per_class, replace=False) for name in classes]
        )
        test_rows = np.setdiff1d(np.arange(len(data.labels)), train_rows)
        labels = torch.tensor([classes.index(data.labels[i]) for i in train_rows])
        for name, model in models(classes, args.backbone, args.models).items():
            if any(key.split("/")[0] == name and f"{per_class}/class" in rows for key, rows in results.items()):
                print(f"small data {per_class}/class {name}: in {args.out} already", flush=True)
                continue
            seconds, steps = train(model, images[train_rows], labels, args.seed, args.epochs_small, args.steps_small)
            for variant, embeddings in embeddings_of(model, images).items():
                score = accuracy(embeddings, data.labels, train_rows, test_rows)
                results.setdefault(name + variant, {})[f"{per_class}/class"] = {
                    "accuracy": round(100 * score, 2), "train_seconds": round(seconds, 1), "steps": steps
                }  # fmt: skip
                print(f"small data {per_class}/class {name}{variant}: {100 * score:.2f} % ({steps} steps)", flush=True)
            args.out.write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="NEU IMAGES folder (<class>_<n>.jpg)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128, help="image side after resizing")
    parser.add_argument("--epochs", type=int, default=3, help="epochs on the 900 base-class images")
    parser.add_argument("--epochs-small", type=int, default=10, help="epochs in the small-data protocol")
    parser.add_argument(
        "--steps-small", type=int, help="optimiser steps in the small-data protocol, at every size (replaces epochs)"
    )
    parser.add_argument("--per-class", nargs="+", type=int, default=[10, 20, 50], help="small-data training sizes")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocols", nargs="+", default=["novel", "small"], choices=["novel", "small"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="trained models to run")
    parser.add_argument("--resume", action="store_true", help="keep the results already in --out, run the rest")
    args = parser.parse_args()
    data = list_labelled_images(args.data)
    images = load_images(data.paths, args.size)
    report = run_header(args)
    if args.resume:
        report = continued_report(args.out, report, {"models": list(MODELS)})
    if "novel" in args.protocols and "novel" not in report:
        report["novel"] = novel_classes(data, images, args)
        args.out.write_text(json.dumps(report, indent=2))  # kept if the small-data protocol is interrupted
    if "small" in args.protocols:
        small_data(data, images, args, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
