"""``kdanomaly detect train | enroll | predict``: the few-shot defect detector from the command line.

Boxed data is a folder of images plus Pascal VOC ``.xml`` files (a folder) or a COCO ``.json`` file; NEU-DET is
``--images neu_det/IMAGES --annotations neu_det/ANNOTATIONS``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from kdanomaly.data import image_files
from kdanomaly.trainer_options import add_trainer_options, trainer_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly detect", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    train = commands.add_parser("train", help="train the detector on boxed images")
    enroll = commands.add_parser("enroll", help="add boxed examples of (new) defect types to a prototype memory")
    for command in (train, enroll):
        command.add_argument("--images", type=Path, required=True, help="image folder")
        command.add_argument("--annotations", type=Path, required=True, help="VOC xml folder or COCO json file")
        command.add_argument("--classes", nargs="+", help="only images whose boxes are all of these classes")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    train.add_argument("--per-class", type=int, help="train on this many images per class (seeded)")
    train.add_argument("--test-fraction", type=float, default=0.2, help="held out (seeded, stratified) for mAP")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--image-size", type=int, default=224)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--pyramid", choices=["ghost", "standard"], default="ghost")
    train.add_argument("--deformable-blocks", type=int, default=1)
    train.add_argument("--contrastive-weight", type=float, default=0.1)
    train.add_argument(
        "--cosine-classifier", action="store_true", help="cosine-similarity class logits instead of the linear ones"
    )
    train.add_argument(
        "--no-flips", action="store_true", help="train without random left-right and top-bottom flips of the images"
    )
    add_trainer_options(train)
    enroll.add_argument("--model", type=Path, required=True)
    enroll.add_argument("--memory", type=Path, required=True, help="memory file (extended if it exists)")
    predict = commands.add_parser("predict", help="boxes and defect types as JSON lines and drawn images")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--memory", type=Path, help="name boxes by the enrolled types (default: trained classes)")
    predict.add_argument("--out", type=Path, required=True, help="folder for predictions.jsonl and drawn images")
    predict.add_argument("--min-score", type=float, default=0.3)
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders")
    return parser


def _train(args: argparse.Namespace) -> None:
    from lightning.pytorch import Trainer, seed_everything
    from torch.utils.data import DataLoader

    from kdanomaly.data.detection import DetectionDataset, collate, per_class, read_annotated, split
    from kdanomaly.models.components.distributed import evaluation_sampler
    from kdanomaly.models.detector import FewShotDetector

    seed_everything(args.seed)
    records, classes = read_annotated(args.images, args.annotations, args.classes)
    train_records, test_records = split(records, args.test_fraction, args.seed)
    if args.per_class is not None:
        train_records = per_class(train_records, args.per_class, args.seed)
    detector = FewShotDetector(
        classes, image_size=args.image_size, pyramid=args.pyramid, deformable_blocks=args.deformable_blocks,
        contrastive_weight=args.contrastive_weight, cosine_classifier=args.cosine_classifier,
    )  # fmt: skip
    loader = DataLoader(
        DetectionDataset(train_records, classes, args.image_size, flips=not args.no_flips),
        args.batch_size,
        shuffle=True,
        collate_fn=collate,
    )
    trainer = Trainer(
        max_epochs=args.epochs, logger=False, enable_checkpointing=False, check_val_every_n_epoch=args.epochs,
        **trainer_options(args),
    )  # fmt: skip
    held_out_data = DetectionDataset(test_records, classes, args.image_size)
    sampler = evaluation_sampler(held_out_data, trainer)
    held_out = DataLoader(held_out_data, 8, sampler=sampler, collate_fn=collate)
    trainer.fit(detector, loader, held_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(args.out)
    map_50 = float(trainer.callback_metrics["map_50"])
    if trainer.is_global_zero:
        print(f"trained on {len(train_records)} images of {classes}; held-out mAP@0.5 {map_50:.4f}: {args.out}")


def _enroll(args: argparse.Namespace) -> None:
    from kdanomaly.data.detection import read_annotated
    from kdanomaly.data.images import read_image
    from kdanomaly.memory import PrototypeMemory
    from kdanomaly.models.detector import FewShotDetector

    detector = FewShotDetector.load_from_checkpoint(args.model, map_location="cpu", pretrained=False)
    records, _ = read_annotated(args.images, args.annotations, args.classes)
    memory = PrototypeMemory.load(args.memory) if args.memory.exists() else None
    for record in tqdm([r for r in records if len(r.labels)], desc="enrolling", unit="image"):
        memory = detector.enroll([read_image(record.path)], [record.boxes], [record.labels], memory)
    if memory is None:
        raise SystemExit(f"no boxes in {args.annotations}")
    memory.save(args.memory)
    print(f"{args.memory} holds {len(memory)} box references of {memory.classes}")


def _predict(args: argparse.Namespace) -> None:
    import torch
    from torchvision.io import write_png
    from torchvision.utils import draw_bounding_boxes

    from kdanomaly.data.images import read_image
    from kdanomaly.memory import PrototypeMemory
    from kdanomaly.models.detector import FewShotDetector

    detector = FewShotDetector.load_from_checkpoint(args.model, map_location="cpu", pretrained=False)
    memory = PrototypeMemory.load(args.memory) if args.memory else None
    paths = [file for path in args.images for file in (image_files(path) if path.is_dir() else [path])]
    if not paths:
        raise SystemExit("no images given")
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "predictions.jsonl").open("w") as lines:
        for path in tqdm(paths, desc="detecting", unit="image"):
            image = read_image(path)
            found = detector.detect([image], memory, args.min_score)[0]
            captions = [f"{name} {score:.2f}" for name, score in zip(found["labels"], found["scores"], strict=True)]
            drawn = draw_bounding_boxes((image * 255).to(torch.uint8), found["boxes"], captions, colors="red")
            write_png(drawn, str(args.out / f"{path.stem}.png"))
            boxes = [[round(v, 1) for v in box] for box in found["boxes"].tolist()]
            scores = [round(float(s), 4) for s in found["scores"]]
            row = {"image": str(path), "boxes": boxes, "labels": found["labels"], "scores": scores}
            lines.write(json.dumps(row) + "\n")
    print(f"{len(paths)} images: {args.out / 'predictions.jsonl'}")


def main(argv: Sequence[str]) -> int:
    """Run one ``kdanomaly detect`` action."""
    args = _parser().parse_args(argv)
    {"train": _train, "enroll": _enroll, "predict": _predict}[args.action](args)
    return 0
