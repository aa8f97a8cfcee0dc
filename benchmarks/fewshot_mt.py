"""Few-shot defect-type recognition on the magnetic tiles (5 types), with a recognizer trained on NEU.

    kdanomaly fewshot train --data ../shared/datasets/neu_det/IMAGES --out neu.ckpt --epochs 2
    python -m benchmarks.fewshot_mt --data ../shared/datasets/magnetic_tile --model neu.ckpt \
        --out benchmarks/results/fewshot_mt.json

The k-shot protocol of NEU's novel classes, on a factory's own defect types that the recognizer never saw:
each defect is cut out around its mask (the box of the mask's pixels, grown to a square of 1.25 times its longer
side, at least 64 px, inside the image; images with an empty mask are skipped and listed), the way
``kdanomaly inspect`` hands regions to the recognizer; k = 1, 3, 5 random references per type are enrolled and
every other crop is classified; mean and standard deviation over ``--draws`` draws. Rows: the untrained ImageNet
backbone (pooled features) and the NEU-trained recognizer matched on its pooled backbone features and on its
projection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resize

from benchmarks.fewshot_neu import kshot_draws, summary
from benchmarks.report import run_header
from kdanomaly.data.magnetic_tile import DEFECT_CLASSES
from kdanomaly.models.recognizer import FewShotRecognizer


def defect_crop(image: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """The square around the mask's pixels (1.25 x its longer side, >= 64 px, clamped to the image), resized."""
    rows, columns = torch.nonzero(mask[0] > 0, as_tuple=True)
    height, width = image.shape[-2:]
    extent = max(int(rows.max() - rows.min()), int(columns.max() - columns.min())) + 1
    side = min(max(64, round(1.25 * extent)), height, width)
    centre_y, centre_x = int(rows.min() + rows.max()) // 2, int(columns.min() + columns.max()) // 2
    top = min(max(centre_y - side // 2, 0), height - side)
    left = min(max(centre_x - side // 2, 0), width - side)
    crop = image[:, top : top + side, left : left + side]
    return resize(crop, [size, size], antialias=True).float() / 255


def defect_crops(root: Path, size: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every defect of the five types, cropped, and its type; the images whose mask is empty are skipped (named)."""
    crops, labels, skipped = [], [], []
    for defect in DEFECT_CLASSES:
        for path in sorted((root / f"MT_{defect}" / "Imgs").glob("*.jpg")):
            mask = decode_image(str(path.with_suffix(".png")), mode=ImageReadMode.GRAY)
            if not mask.any():
                skipped.append(f"{path.parent.parent.name}/{path.name}")
                continue
            crops.append(defect_crop(decode_image(str(path), mode=ImageReadMode.RGB), mask, size))
            labels.append(defect)
    return torch.stack(crops), labels, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="magnetic-tile root (MT_<type>/Imgs)")
    parser.add_argument("--model", type=Path, required=True, help="recognizer checkpoint (kdanomaly fewshot train)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    crops, labels, skipped = defect_crops(args.data, args.size)
    trained = FewShotRecognizer.load_from_checkpoint(args.model, map_location="cpu")
    pretrained = FewShotRecognizer(trained.class_names, trained.hparams["backbone"])  # untrained: ImageNet features
    embeddings = {"pretrained": pretrained.embed(crops)}
    for match_on in ("backbone", "projection"):
        trained.match_on = match_on
        embeddings[f"recognizer/{match_on}"] = trained.embed(crops)
    report: dict[str, object] = {
        **run_header(args),
        "crops_per_type": {defect: labels.count(defect) for defect in DEFECT_CLASSES},
        "skipped_empty_masks": skipped,
        "recognizer_trained_on": trained.class_names,
    }
    report["accuracy"] = {
        name: {
            f"k={k}": summary(kshot_draws(vectors, labels, list(DEFECT_CLASSES), k, args.draws, args.seed))
            for k in (1, 3, 5)
        }
        for name, vectors in embeddings.items()
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
