"""``kdanomaly fewshot train | enroll | classify``: the few-shot recognizer from the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from kdanomaly.data import image_files
from kdanomaly.data.labelled_images import list_labelled_images, load_images
from kdanomaly.trainer_options import add_trainer_options, trainer_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly fewshot", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    train = commands.add_parser("train", help="learn defect embeddings from labelled images")
    train.add_argument("--data", type=Path, required=True, help="class folders or <class>_<n> images")
    train.add_argument("--classes", nargs="+", help="train on these classes only (default: all)")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--backbone", default="tf_efficientnet_lite0")
    add_trainer_options(train)
    enroll = commands.add_parser("enroll", help="add labelled reference images to a prototype memory")
    enroll.add_argument("--model", type=Path, required=True)
    enroll.add_argument("--data", type=Path, required=True, help="class folders or <class>_<n> images")
    enroll.add_argument("--memory", type=Path, required=True, help="memory file (extended if it exists)")
    classify = commands.add_parser("classify", help="name the defect type of images (JSON lines)")
    classify.add_argument("--model", type=Path, required=True)
    classify.add_argument("--memory", type=Path, required=True)
    classify.add_argument("images", nargs="+", type=Path, help="image files or folders")
    for command in (train, enroll, classify):
        command.add_argument("--size", type=int, default=128, help="image side after resizing")
    return parser


def _embed_with_progress(recognizer: torch.nn.Module, paths: Sequence[Path], size: int) -> torch.Tensor:
    """Embeddings of ``paths`` in chunks of 64, with a progress bar."""
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    return torch.cat(
        [recognizer.embed(load_images(chunk, size)) for chunk in tqdm(chunks, desc="embedding", unit="batch")]
    )


def _train(args: argparse.Namespace) -> None:
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from kdanomaly.models.recognizer import FewShotRecognizer

    data = list_labelled_images(args.data)
    data = data.of(args.classes) if args.classes else data
    images = load_images(data.paths, args.size)
    labels = torch.tensor([data.classes.index(label) for label in data.labels])
    recognizer = FewShotRecognizer(data.classes, args.backbone)
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size, shuffle=True)
    trainer = Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, **trainer_options(args))
    trainer.fit(recognizer, loader)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(args.out)
    if trainer.is_global_zero:
        print(f"trained on {len(images)} images of {data.classes}: {args.out}")


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
    paths = [file for path in args.images for file in (image_files(path) if path.is_dir() else [path])]
    if not paths:
        raise SystemExit("no images given")
    prediction = memory.predict(_embed_with_progress(recognizer, paths, args.size))
    for path, label, similarity in zip(paths, prediction.labels, prediction.similarities, strict=True):
        print(json.dumps({"image": str(path), "type": label, "similarity": round(float(similarity), 4)}))


def main(argv: Sequence[str]) -> int:
    """Run one ``kdanomaly fewshot`` action."""
    args = _parser().parse_args(argv)
    {"train": _train, "enroll": _enroll, "classify": _classify}[args.action](args)
    return 0
