"""``kdanomaly detect train | enroll | predict``: the few-shot defect detector from the command line.

Boxed data is a folder of images plus Pascal VOC ``.xml`` files (a folder) or a COCO ``.json`` file; NEU-DET is
``--data.images neu_det/IMAGES --data.annotations neu_det/ANNOTATIONS`` to ``train`` (a LightningCLI: ``--data.*``,
``--model.*``, ``--trainer.*``, ``-c configs/detector/default.yaml``) and ``--images ... --annotations ...`` to
``enroll``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from kdanomaly.cli.training import LightningArgumentParser, TrainingCLI
from kdanomaly.data import images_given

TRAINER_DEFAULTS = {"max_epochs": 20}  # besides TrainingCLI's quiet ones


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly detect", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("train", help="train the detector on boxed images (LightningCLI, see train --help)")
    enroll = commands.add_parser("enroll", help="add boxed examples of (new) defect types to a prototype memory")
    enroll.add_argument("--images", type=Path, required=True, help="image folder")
    enroll.add_argument("--annotations", type=Path, required=True, help="VOC xml folder or COCO json file")
    enroll.add_argument("--classes", nargs="+", help="only images whose boxes are all of these classes")
    enroll.add_argument("--model", type=Path, required=True)
    enroll.add_argument("--memory", type=Path, required=True, help="memory file (extended if it exists)")
    predict = commands.add_parser("predict", help="boxes and defect types as JSON lines and drawn images")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--memory", type=Path, help="name boxes by the enrolled types (default: trained classes)")
    predict.add_argument("--out", type=Path, required=True, help="folder for predictions.jsonl and drawn images")
    predict.add_argument("--min-score", type=float, default=0.3)
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders")
    return parser


def _validate_once(max_epochs: int | None) -> int:
    """``check_val_every_n_epoch`` for one held-out mAP after the last epoch (every epoch when unbounded)."""
    return max_epochs or 1


class DetectorTrainingCLI(TrainingCLI):
    """``kdanomaly detect train``: the image size is the data's, ``--data.seed`` seeds everything, and the held-out
    mAP is computed once, after the last epoch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.image_size", "model.image_size")
        parser.link_arguments("data.seed", "seed_everything")
        parser.link_arguments("trainer.max_epochs", "trainer.check_val_every_n_epoch", compute_fn=_validate_once)


def training_cli(argv: Sequence[str]) -> DetectorTrainingCLI:
    """``kdanomaly detect train``'s LightningCLI over ``argv``: FewShotDetector, BoxedImagesDataModule and the trainer
    built, not trained yet."""
    from kdanomaly.data.boxed_images import BoxedImagesDataModule
    from kdanomaly.models.detector import FewShotDetector

    return DetectorTrainingCLI(FewShotDetector, BoxedImagesDataModule, "kdanomaly detect train", argv, TRAINER_DEFAULTS)


def _train(argv: Sequence[str]) -> None:
    """Train, then print the held-out mAP@0.5 (validated now if training stopped early, e.g. by max_steps)."""
    cli = training_cli(argv)
    out = cli.fit_and_save()
    if "map_50" not in cli.trainer.callback_metrics:
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    map_50 = float(cli.trainer.callback_metrics["map_50"])
    data = cli.datamodule
    if cli.trainer.is_global_zero:
        print(f"trained on {len(data.train_records)} images of {data.classes}; held-out mAP@0.5 {map_50:.4f}: {out}")


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
    paths = images_given(args.images)
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
    if argv and argv[0] == "train":
        _train(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    {"enroll": _enroll, "predict": _predict}[args.action](args)
    return 0
