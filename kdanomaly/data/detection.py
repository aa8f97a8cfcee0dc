"""Boxed defect images for a two-stage detector: Pascal VOC / COCO readers, NEU-DET, seeded splits, a dataset."""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import resize

from kdanomaly.data import IMAGE_SUFFIXES
from kdanomaly.data.images import read_image

NEU_CLASSES: tuple[str, ...] = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
TOLERANCE = 1.0  # pixels a (rescaled) box may stick out of its image; such a box is clamped, a worse one is an error
MAX_LISTED = 20  # bad files named in one AnnotationError

OnError = Literal["raise", "skip"]
Target = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class BoxedImage:
    """An image and its boxes: float32 ``(N, 4)`` xyxy in the image's pixels; ``size`` is (width, height)."""

    path: Path
    boxes: torch.Tensor
    labels: tuple[str, ...]
    size: tuple[int, int]


class AnnotationError(ValueError):
    """Bad annotations; the message names each bad file and what is wrong with it."""


def _missing(value: str | float | None) -> bool:
    """Whether an annotated ``value`` is absent or blank."""
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: str | float | None, what: str) -> float:
    """``value`` (text or number) as a finite float; AnnotationError naming ``what`` otherwise."""
    if value is None or _missing(value):
        raise AnnotationError(f"{what} is missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise AnnotationError(f"{what} is not finite: {value!r}")
    return number


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise AnnotationError(f"cannot read image {path.name}: {error}") from error


def _scale(width: str | float | None, height: str | float | None, size: tuple[int, int]) -> tuple[float, float]:
    """Factors from the annotated frame (``width`` x ``height``; missing or 0 = the real size) to the real ``size``."""
    if _missing(width) or _missing(height):
        return 1.0, 1.0
    frame = _number(width, "annotated width"), _number(height, "annotated height")
    if 0 in frame:
        return 1.0, 1.0
    if min(frame) < 0:
        raise AnnotationError(f"annotated size {frame[0]:g}x{frame[1]:g} is negative")
    return size[0] / frame[0], size[1] / frame[1]


def _box(raw: Sequence[float], scale: tuple[float, float], size: tuple[int, int]) -> list[float]:
    """The xyxy box ``raw`` rescaled into the real image ``size``, clamped within TOLERANCE; else AnnotationError."""
    width, height = size
    x0, y0, x1, y1 = raw[0] * scale[0], raw[1] * scale[1], raw[2] * scale[0], raw[3] * scale[1]
    shown = "[" + ", ".join(f"{v:g}" for v in raw) + "]"
    if min(x0, y0) < -TOLERANCE or x1 > width + TOLERANCE or y1 > height + TOLERANCE:
        rescaled = "" if scale == (1.0, 1.0) else f" (rescaled [{x0:g}, {y0:g}, {x1:g}, {y1:g}])"
        raise AnnotationError(f"box {shown}{rescaled} lies outside the {width}x{height} image")
    x0, x1 = (min(max(v, 0.0), width) for v in (x0, x1))
    y0, y1 = (min(max(v, 0.0), height) for v in (y0, y1))
    if x1 <= x0 or y1 <= y0:
        raise AnnotationError(f"degenerate box {shown} (needs xmax > xmin and ymax > ymin)")
    return [x0, y0, x1, y1]


def _record(path: Path, boxes: list[list[float]], labels: list[str], size: tuple[int, int]) -> BoxedImage:
    """A BoxedImage with float32 ``(N, 4)`` boxes (also when N = 0)."""
    return BoxedImage(path, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), tuple(labels), size)


def _accept(records: list[BoxedImage], problems: list[str], on_error: OnError, source: Path) -> list[BoxedImage]:
    """``records`` sorted by path, after raising one AnnotationError for all ``problems`` or warning about each."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if problems and on_error == "raise":
        listed = problems[:MAX_LISTED] + (
            [f"and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise AnnotationError(f"{len(problems)} bad annotation(s) in {source}:\n  " + "\n  ".join(listed))
    for problem in problems:
        warnings.warn(f"skipped bad annotation in {source}: {problem}", stacklevel=3)
    return sorted(records, key=lambda record: record.path)


def _read_voc_file(xml: Path, by_stem: dict[str, list[Path]], known: dict[str, str] | None) -> BoxedImage:
    """One VOC file's record (image matched by stem, boxes rescaled to the real image); AnnotationError if bad."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as error:
        raise AnnotationError(f"not parseable XML ({error})") from error
    matches = by_stem.get(xml.stem, [])
    if not matches:
        raise AnnotationError(f"no image named {xml.stem}.*")
    if len(matches) > 1:
        raise AnnotationError(f"several images named {xml.stem}.*: {', '.join(p.name for p in matches)}")
    path = matches[0]
    size = _image_size(path)
    frame = root.find("size")
    scale = (1.0, 1.0) if frame is None else _scale(frame.findtext("width"), frame.findtext("height"), size)
    boxes, labels = [], []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"object {i} has no <name>")
        if known is not None:
            if name.casefold() not in known:
                raise AnnotationError(f"object {i}: unknown class {name!r}")
            name = known[name.casefold()]
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"object {i} ({name}) has no <bndbox>")
        try:
            raw = [_number(bndbox.findtext(key), f"<{key}>") for key in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append(_box(raw, scale, size))
        except AnnotationError as error:
            raise AnnotationError(f"object {i} ({name}): {error}") from None
        labels.append(name)
    return _record(path, boxes, labels, size)


def read_voc(
    images: Path, annotations: Path, classes: Sequence[str] | None = None, on_error: OnError = "raise"
) -> tuple[list[BoxedImage], list[str]]:
    """Pascal VOC ``annotations/*.xml`` with their ``images`` (matched by stem), sorted by path, and the class names.

    Object names are stripped; given ``classes``, they match case-insensitively and others are errors, else the
    classes are the sorted names seen. ``<filename>`` is ignored. Bad files raise one AnnotationError naming them
    all, or with ``on_error="skip"`` are dropped with a warning each.
    """
    images, annotations = Path(images), Path(annotations)
    xmls = sorted(p for p in annotations.glob("*") if p.is_file() and p.suffix.lower() == ".xml")
    if not xmls:
        raise ValueError(f"{annotations} holds no .xml annotations")
    if not images.is_dir():
        raise ValueError(f"{images} is not a folder of images")
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(images.glob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem[path.stem].append(path)
    known = None if classes is None else {name.casefold(): name for name in classes}
    records, problems = [], []
    for xml in xmls:
        try:
            records.append(_read_voc_file(xml, by_stem, known))
        except AnnotationError as error:
            problems.append(f"{xml.name}: {error}")
    records = _accept(records, problems, on_error, annotations)
    names = list(classes) if classes is not None else sorted({label for r in records for label in r.labels})
    return records, names


def _read_coco_image(entry: dict, annotations: list[dict], images: Path, categories: dict) -> BoxedImage:
    """One COCO image's record (bbox ``[x, y, w, h]`` rescaled to the real image); AnnotationError if bad."""
    path = images / str(entry.get("file_name", ""))
    if not path.is_file():
        raise AnnotationError(f"missing image {path}")
    size = _image_size(path)
    scale = _scale(entry.get("width"), entry.get("height"), size)
    boxes, labels = [], []
    for annotation in annotations:
        what = f"annotation {annotation.get('id')}"
        name = categories.get(annotation.get("category_id"))
        if name is None:
            raise AnnotationError(f"{what}: unknown category id {annotation.get('category_id')!r}")
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AnnotationError(f"{what} ({name}): bbox {bbox!r} is not [x, y, w, h]")
        try:
            x, y, w, h = (_number(v, "bbox") for v in bbox)
            boxes.append(_box([x, y, x + w, y + h], scale, size))
        except AnnotationError as error:
            raise AnnotationError(f"{what} ({name}): {error}") from None
        labels.append(name)
    return _record(path, boxes, labels, size)


def read_coco(images: Path, annotation_file: Path, on_error: OnError = "raise") -> tuple[list[BoxedImage], list[str]]:
    """A COCO json's images (``file_name`` under ``images``), sorted by path, and the category names by id.

    Validation as in :func:`read_voc`, per image; an unparseable file or an annotation of an unknown image id is
    always an error.
    """
    images, annotation_file = Path(images), Path(annotation_file)
    try:
        coco = json.loads(annotation_file.read_text(encoding="utf-8"))
        categories = {c["id"]: str(c["name"]).strip() for c in coco["categories"]}
        entries = {entry["id"]: entry for entry in coco["images"]}
        by_image: dict[object, list[dict]] = defaultdict(list)
        for annotation in coco.get("annotations", []):
            by_image[annotation["image_id"]].append(annotation)
    except (ValueError, KeyError, TypeError) as error:
        raise AnnotationError(f"{annotation_file}: not a COCO annotation file ({error!r})") from error
    orphans = sorted(map(str, by_image.keys() - entries.keys()))
    if orphans:
        raise AnnotationError(
            f"{annotation_file}: annotations of unknown image id(s) {', '.join(orphans[:MAX_LISTED])}"
        )
    records, problems = [], []
    for image_id, entry in entries.items():
        try:
            records.append(_read_coco_image(entry, by_image[image_id], images, categories))
        except AnnotationError as error:
            problems.append(f"image {image_id} ({entry.get('file_name')}): {error}")
    return _accept(records, problems, on_error, annotation_file), [categories[i] for i in sorted(categories)]


def read_neu_det(root: Path) -> tuple[list[BoxedImage], list[str]]:
    """NEU-DET: ``root/IMAGES`` and ``root/ANNOTATIONS`` (VOC, boxes rescaled to the real image size)."""
    root = Path(root)
    return read_voc(root / "IMAGES", root / "ANNOTATIONS", classes=NEU_CLASSES)


def image_class(record: BoxedImage) -> str:
    """The image's most frequent label (ties: the first in sorted order); ValueError if it has no boxes."""
    if not record.labels:
        raise ValueError(f"{record.path} has no boxes, hence no class")
    counts = Counter(record.labels)
    top = max(counts.values())
    return min(label for label, n in counts.items() if n == top)


def _by_class(records: Iterable[BoxedImage]) -> dict[str, list[BoxedImage]]:
    """Records sorted by path, grouped by image_class ("" for images without boxes), groups in sorted order."""
    groups: dict[str, list[BoxedImage]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.path):
        groups[image_class(record) if record.labels else ""].append(record)
    return dict(sorted(groups.items()))


def split(
    records: Iterable[BoxedImage], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[BoxedImage], list[BoxedImage]]:
    """Seeded (train, test), each sorted by path, with ``test_fraction`` (rounded) of every image_class in test.

    Images without boxes form their own stratum; the result does not depend on the order of ``records``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), not {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for group in _by_class(records).values():
        order = rng.permutation(len(group))
        n_test = round(len(group) * test_fraction)
        test += [group[i] for i in order[:n_test]]
        train += [group[i] for i in order[n_test:]]
    return sorted(train, key=lambda r: r.path), sorted(test, key=lambda r: r.path)


def per_class(records: Iterable[BoxedImage], k: int, seed: int = 0) -> list[BoxedImage]:
    """``k`` seeded images of each image_class (images without boxes are left out), sorted by path."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    groups = {name: group for name, group in _by_class(records).items() if name}
    short = {name: len(group) for name, group in groups.items() if len(group) < k}
    if not groups or short:
        raise ValueError(f"need {k} images of each class; too few of {short or 'any class'}")
    rng = np.random.default_rng(seed)
    chosen = [group[i] for group in groups.values() for i in rng.choice(len(group), size=k, replace=False)]
    return sorted(chosen, key=lambda r: r.path)


class DetectionDataset(Dataset):
    """Boxed images as ``(image, target)`` pairs for torchvision detectors.

    ``image`` is float32 ``(3, size, size)`` RGB in [0, 1]; ``target`` is ``{"boxes": float32 (N, 4) xyxy in that
    frame, "labels": int64 (N,)}`` with label = class index + 1 (0 is the background). With ``flips`` (for
    training), each image and its boxes are flipped left-right and top-bottom, each with probability 1/2.
    """

    def __init__(self, records: Sequence[BoxedImage], classes: Sequence[str], size: int, flips: bool = False) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.size = size
        self.flips = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]) if flips else None
        self._index = {name: i + 1 for i, name in enumerate(self.classes)}
        unknown = sorted({label for record in self.records for label in record.labels} - self._index.keys())
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {self.classes}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        record = self.records[index]
        image = read_image(record.path)
        width, height = image.shape[2], image.shape[1]
        if (width, height) != record.size:
            raise ValueError(f"{record.path} is {width}x{height}, its record says {record.size[0]}x{record.size[1]}")
        image = resize(image, [self.size, self.size], antialias=True).clamp_(0, 1)  # float rounding can exceed 1
        scale = torch.tensor([self.size / width, self.size / height] * 2, dtype=torch.float32)
        labels = torch.tensor([self._index[label] for label in record.labels], dtype=torch.int64)
        boxes = record.boxes * scale
        if self.flips is not None:
            image, boxes = self.flips(
                image, tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[1:])
            )
            boxes = boxes.as_subclass(torch.Tensor)
        return image, {"boxes": boxes, "labels": labels}


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """A batch as ``(B, 3, S, S)`` images and the list of their targets."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def read_annotated(
    images: Path, annotations: Path, classes: Sequence[str] | None = None
) -> tuple[list[BoxedImage], list[str]]:
    """A user's boxed images: ``annotations`` is a COCO ``.json`` file or a folder of Pascal VOC ``.xml`` files.

    With ``classes``, only the images whose boxes all belong to them are kept, and they are the class list."""
    records, names = (
        read_coco(images, annotations) if annotations.suffix.lower() == ".json" else read_voc(images, annotations)
    )
    if classes is None:
        return records, names
    missing = sorted(set(classes) - set(names))
    if missing:
        raise ValueError(f"classes {missing} do not occur in {annotations} (it has {names})")
    return only_classes(records, classes), list(classes)


def only_classes(records: Iterable[BoxedImage], classes: Sequence[str]) -> list[BoxedImage]:
    """The records whose boxes all belong to ``classes`` (images without boxes included)."""
    wanted = set(classes)
    return [record for record in records if set(record.labels) <= wanted]
