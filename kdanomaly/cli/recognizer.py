"""``kdanomaly fewshot train | enroll | classify``: the few-shot recognizer from the command line.

``train`` is a LightningCLI (``--data.*``, ``--model.*``, ``--trainer.*``, ``-c configs/recognizer/default.yaml``):
``kdanomaly fewshot train --data.root DIR --out recognizer.ckpt``; ``enroll`` and ``classify`` are plain options.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from kdanomaly.cli.training import TrainingCLI
from kdanomaly.data import images_given
from kdanomaly.data.labelled_images import LabelledImagesDataModule, list_labelled_images, load_images

if TYPE_CHECKING:
    from kdanomaly.models.recognizer import FewShotRecognizer

TRAINER_DEFAULTS = {"max_epochs": 10}  # besides TrainingCLI's quiet ones


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly fewshot", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("train", help="learn defect embeddings from labelled images (LightningCLI, see train --help)")
    enroll = commands.add_parser("enroll", help="add labelled reference images to a prototype memory")
    enroll.add_argument("--model", type=Path, required=True)
    enroll.add_argument("--data", type=Path, required=True, help="class folders or <class>_<n> images")
    enroll.add_argument("--memory", type=Path, required=True, help="memory file (extended if it exists)")
    classify = commands.add_parser("classify", help="name the defect type of images (JSON lines)")
    classify.add_argument("--model", type=Path, required=True)
    classify.add_argument("--memory", type=Path, required=True)
    classify.add_argument("images", nargs="+", type=Path, help="image files or folders")
    for command in (enroll, classify):
        command.add_argument("--size", type=int, default=128, help="image side after resizing (as trained)")
    return parser


def _embed_with_progress(recognizer: FewShotRecognizer, paths: Sequence[Path], size: int) -> torch.Tensor:
    """Embeddings of ``paths`` in chunks of 64, with a progress bar."""
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    return torch.cat(
        [recognizer.embed(load_images(chunk, size)) for chunk in tqdm(chunks, desc="embedding", unit="batch")]
    )


def training_cli(argv: Sequence[str]) -> TrainingCLI:
    """``kdanomaly fewshot train``'s LightningCLI over ``argv``: FewShotRecognizer, LabelledImagesDataModule and the
    trainer built, not trained yet."""
    from kdanomaly.models.recognizer import FewShotRecognizer

    return TrainingCLI(FewShotRecognizer, LabelledImagesDataModule, "kdanomaly fewshot train", argv, TRAINER_DEFAULTS)


def _train(argv: Sequence[str]) -> None:
    cli = training_cli(argv)
    out = cli.fit_and_save()
    if cli.trainer.is_global_zero:
        print(f"trained on {len(cli.datamodule.images.paths)} images of {cli.datamodule.classes}: {out}")


def _enroll(args: argparse.Namespace) -> None:
    from kdanomaly.memory import PrototypeMemory
    from kdanomaly.models.recognizer import FewShotRecognizer

    recognizer = FewShotRecognizer.load_from_checkpoint(args.model, map_location="cpu", pretrained=False)
    data = list_labelled_images(args.data)
    embeddings = _embed_with_progress(recognizer, data.paths, args.size)
    exists = args.memory.exists()
    memory = PrototypeMemory.load(args.memory) if exists else PrototypeMemory(embeddings.shape[1])
    memory.add(embeddings, data.labels, [{"image": str(path)} for path in data.paths])
    memory.save(args.memory)
    print(f"enrolled {len(data.paths)} references of {data.classes}; {args.memory} holds {memory.classes}")


def _classify(args: argparse.Namespace) -> None:
    from kdanomaly.memory import PrototypeMemory
    from kdanomaly.models.recognizer import FewShotRecognizer

    recognizer = FewShotRecognizer.load_from_checkpoint(args.model, map_location="cpu", pretrained=False)
    memory = PrototypeMemory.load(args.memory)
    paths = images_given(args.images)
    prediction = memory.predict(_embed_with_progress(recognizer, paths, args.size))
    for path, label, similarity in zip(paths, prediction.labels, prediction.similarities, strict=True):
        print(json.dumps({"image": str(path), "type": label, "similarity": round(float(similarity), 4)}))


def main(argv: Sequence[str]) -> int:
    """Run one ``kdanomaly fewshot`` action."""
    if argv and argv[0] == "train":
        _train(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    {"enroll": _enroll, "classify": _classify}[args.action](args)
    return 0
