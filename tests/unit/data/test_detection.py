"""Boxed defect data: VOC/COCO readers rescale and validate boxes, seeded stratified splits, the detection dataset."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdanomaly.data.detection import (
    NEU_CLASSES,
    AnnotationError,
    BoxedImage,
    DetectionDataset,
    collate,
    image_class,
    per_class,
    read_coco,
    read_neu_det,
    read_voc,
    split,
)

NEU_ROOT = Path(__file__).resolve().parents[4] / "shared/datasets/neu_det"
Box = tuple[float, float, float, float]
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def _image(path: Path, width: int, height: int) -> Path:
    """An RGB image: red left half, blue right half."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _voc(path: Path, objects: list[tuple[str, Box | None]], frame: tuple[int, int] | None = (200, 200)) -> Path:
    """A VOC file of ``objects`` (name, xyxy box; None: no <bndbox>) in the ``frame`` (None: no <size>)."""
    size = "" if frame is None else f"<size><width>{frame[0]}</width><height>{frame[1]}</height><depth>3</depth></size>"
    parts = []
    for name, box in objects:
        bndbox = (
            ""
            if box is None
            else "<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(BOX_KEYS, box, strict=True)) + "</bndbox>"
        )
        parts.append(f"<object><name>{name}</name><difficult>0</difficult>{bndbox}</object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>other.jpg</filename>{size}{''.join(parts)}</annotation>")
    return path


OBJECTS: list[tuple[str, Box | None]] = [("scratches", (10, 20, 110, 120)), ("inclusion", (0, 0, 200, 200))]


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """One 400x300 PNG whose VOC boxes are in a 200x200 frame, and one 64x48 JPEG without objects or <size>."""
    _image(tmp_path / "images/a.png", 400, 300)
    _voc(tmp_path / "xml/a.xml", OBJECTS)
    _image(tmp_path / "images/b.jpg", 64, 48)
    _voc(tmp_path / "xml/b.xml", [], frame=None)
    return tmp_path


def test_voc_boxes_are_rescaled_to_the_real_image(voc_root: Path) -> None:
    records, classes = read_voc(voc_root / "images", voc_root / "xml")
    assert classes == ["inclusion", "scratches"]
    assert [r.path.name for r in records] == ["a.png", "b.jpg"]
    a, b = records
    assert a.size == (400, 300) and a.labels == ("scratches", "inclusion")
    assert a.boxes.dtype == torch.float32
    assert torch.equal(a.boxes, torch.tensor([[20.0, 30.0, 220.0, 180.0], [0.0, 0.0, 400.0, 300.0]]))
    assert b.size == (64, 48) and b.labels == () and b.boxes.shape == (0, 4)


def test_voc_names_are_normalised_and_small_overhangs_clamped(tmp_path: Path) -> None:
    _image(tmp_path / "images/a.png", 100, 80)
    _voc(tmp_path / "xml/a.xml", [(" Scratches\n", (-0.5, 2, 100.75, 80.5))], frame=None)
    records, classes = read_voc(tmp_path / "images", tmp_path / "xml", classes=["inclusion", "scratches"])
    assert classes == ["inclusion", "scratches"]
    assert records[0].labels == ("scratches",)
    assert torch.equal(records[0].boxes, torch.tensor([[0.0, 2.0, 100.0, 80.0]]))


def test_dataset_resizes_images_and_boxes(voc_root: Path) -> None:
    records, classes = read_voc(voc_root / "images", voc_root / "xml")
    dataset = DetectionDataset(records, classes, size=100)
    image, target = dataset[0]
    assert image.shape == (3, 100, 100) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert image[0, :, :45].min() > 0.99 and image[2, :, :45].max() < 0.01  # red left half stays left, RGB order
    assert image[2, :, 55:].min() > 0.99
    expected = torch.tensor([[20 / 4, 30 / 3, 220 / 4, 180 / 3], [0.0, 0.0, 100.0, 100.0]])
    assert torch.allclose(target["boxes"], expected) and target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    images, targets = collate([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 100, 100)
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)


def test_flips_move_boxes_with_the_image(tmp_path: Path) -> None:
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[4:12, 24:36] = 255  # a white box in the top-right corner
    Image.fromarray(pixels).save(tmp_path / "a.png")
    record = BoxedImage(tmp_path / "a.png", torch.tensor([[24.0, 4.0, 36.0, 12.0]]), ("x",), (40, 40))
    dataset = DetectionDataset([record], ["x"], size=40, flips=True)
    torch.manual_seed(0)
    corners = set()
    for _ in range(40):
        image, target = dataset[0]
        x0, y0, x1, y1 = target["boxes"][0].round().int().tolist()
        assert image[:, y0:y1, x0:x1].min() > 0.9 and image.sum() == pytest.approx(3 * 12 * 8, rel=0.05)
        assert type(target["boxes"]) is torch.Tensor and target["labels"].tolist() == [1]
        corners.add((x0, y0))
    assert corners == {(24, 4), (4, 4), (24, 28), (4, 28)}  # unflipped, left-right, top-bottom, both


def test_dataset_reads_16_bit_grey_as_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((30, 40), 65535 // 4, dtype=np.uint16)).save(tmp_path / "g.png")
    record = BoxedImage(tmp_path / "g.png", torch.zeros(0, 4), (), (40, 30))
    image, _ = DetectionDataset([record], ["x"], size=16)[0]
    assert image.shape == (3, 16, 16)
    assert torch.allclose(image, torch.full_like(image, 0.25), atol=1e-3)


def _bad_voc_set(root: Path) -> list[str]:
    """Good files plus one of each problem; returns the bad xml names."""
    for stem in ("good1", "good2", "broken", "outside", "above", "degenerate", "unknown", "text"):
        _image(root / f"images/{stem}.jpg", 400, 300)
    _voc(root / "xml/good1.xml", OBJECTS)
    _voc(root / "xml/good2.xml", [("crazing", (1, 1, 5, 5))])
    (root / "xml/broken.xml").write_text("<annotation><object>")
    _voc(root / "xml/missing.xml", OBJECTS)
    _voc(root / "xml/outside.xml", [("crazing", (10, 10, 205, 50))])  # 410 px in a 400 px wide image
    _voc(root / "xml/above.xml", [("crazing", (10, -1, 50, 50))])  # -1.5 px, beyond the 1 px tolerance
    _voc(root / "xml/degenerate.xml", [("crazing", (50, 10, 50, 60))])
    _voc(root / "xml/unknown.xml", [("rust", (10, 10, 50, 50))])
    _voc(root / "xml/text.xml", [("crazing", ("ten", 10, 50, 50))])
    return ["broken", "missing", "outside", "above", "degenerate", "unknown", "text"]


def test_every_bad_voc_file_is_named_in_one_error(tmp_path: Path) -> None:
    bad = _bad_voc_set(tmp_path)
    classes = ["crazing", "inclusion", "scratches"]
    with pytest.raises(AnnotationError) as caught:
        read_voc(tmp_path / "images", tmp_path / "xml", classes=classes)
    message = str(caught.value)
    assert message.startswith(f"{len(bad)} bad annotation(s)")
    for stem in bad:
        assert f"{stem}.xml" in message
    assert "good" not in message
    for reason in ("not parseable", "no image named missing", "outside the 400x300", "degenerate", "'rust'", "'ten'"):
        assert reason in message

    with pytest.warns(UserWarning) as warned:
        records, names = read_voc(tmp_path / "images", tmp_path / "xml", classes=classes, on_error="skip")
    assert [r.path.stem for r in records] == ["good1", "good2"] and names == classes
    assert len(warned) == len(bad)
    assert all(any(f"{stem}.xml: " in str(w.message) for w in warned) for stem in bad)


def test_long_error_lists_are_capped(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"{i:02d}.xml").write_text("not xml")
    with pytest.raises(AnnotationError, match=r"and 5 more$") as caught:
        read_voc(tmp_path, tmp_path)
    assert "19.xml" in str(caught.value) and "20.xml" not in str(caught.value)


def _coco(path: Path, images: list[dict], annotations: list[dict]) -> Path:
    categories = [{"id": 7, "name": "scratches"}, {"id": 3, "name": "inclusion"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_gives_the_same_records_as_voc(voc_root: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.png", "width": 200, "height": 200},
        {"id": 2, "file_name": "b.jpg"},
    ]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 20, 100, 100]},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 200, 200]},
    ]
    coco, coco_classes = read_coco(voc_root / "images", _coco(voc_root / "coco.json", images, annotations))
    voc, voc_classes = read_voc(voc_root / "images", voc_root / "xml")
    assert coco_classes == voc_classes == ["inclusion", "scratches"]  # ordered by category id
    for c, v in zip(coco, voc, strict=True):
        assert (c.path, c.labels, c.size) == (v.path, v.labels, v.size)
        assert torch.equal(c.boxes, v.boxes)


def test_bad_coco_images_are_named(voc_root: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.png", "width": 200, "height": 200},
        {"id": 2, "file_name": "gone.png"},
        {"id": 3, "file_name": "b.jpg"},
    ]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [150, 20, 60, 100]},  # x + w = 210 > 200
        {"id": 11, "image_id": 3, "category_id": 99, "bbox": [0, 0, 10, 10]},
    ]
    annotation_file = _coco(voc_root / "coco.json", images, annotations)
    with pytest.raises(AnnotationError) as caught:
        read_coco(voc_root / "images", annotation_file)
    message = str(caught.value)
    assert message.startswith("3 bad annotation(s)")
    assert "a.png" in message and "outside" in message
    assert "gone.png" in message and "missing image" in message
    assert "b.jpg" in message and "unknown category id 99" in message
    with pytest.warns(UserWarning):
        assert read_coco(voc_root / "images", annotation_file, on_error="skip")[0] == []
    (voc_root / "coco.json").write_text("{")
    with pytest.raises(AnnotationError, match="not a COCO annotation file"):
        read_coco(voc_root / "images", voc_root / "coco.json")


def _records(counts: dict[str, int]) -> list[BoxedImage]:
    """Fake records (no files): ``counts[c]`` images of class c, plus two without boxes."""
    records = [
        BoxedImage(Path(f"{c}_{i:03d}.png"), torch.zeros(1, 4), (c,), (8, 8)) for c in counts for i in range(counts[c])
    ]
    return records + [BoxedImage(Path(f"empty_{i}.png"), torch.zeros(0, 4), (), (8, 8)) for i in range(2)]


def test_image_class_is_the_majority_label() -> None:
    record = BoxedImage(Path("x.png"), torch.zeros(5, 4), ("patches", "inclusion", "patches", "inclusion", "b"), (8, 8))
    assert image_class(record) == "inclusion"  # tie between inclusion and patches: first in sorted order
    assert image_class(BoxedImage(Path("x.png"), torch.zeros(3, 4), ("z", "a", "z"), (8, 8))) == "z"
    with pytest.raises(ValueError, match="no boxes"):
        image_class(BoxedImage(Path("x.png"), torch.zeros(0, 4), (), (8, 8)))


def test_split_is_seeded_stratified_and_order_free() -> None:
    records = _records({"a": 10, "b": 20, "c": 30})
    train, test = split(records, test_fraction=0.2, seed=1)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    again = split(shuffled, test_fraction=0.2, seed=1)
    assert [r.path for r in again[0]] == [r.path for r in train] and [r.path for r in again[1]] == [
        r.path for r in test
    ]
    assert {r.path for r in train} | {r.path for r in test} == {r.path for r in records}
    assert not {r.path for r in train} & {r.path for r in test}
    assert Counter(r.path.stem.split("_")[0] for r in test) == {"a": 2, "b": 4, "c": 6}
    assert {r.path for r in split(records, 0.2, seed=2)[1]} != {r.path for r in test}


def test_per_class_takes_k_of_each_class() -> None:
    records = _records({"a": 10, "b": 15})
    chosen = per_class(records, k=3, seed=5)
    assert Counter(image_class(r) for r in chosen) == {"a": 3, "b": 3}
    assert [r.path for r in per_class(records[::-1], k=3, seed=5)] == [r.path for r in chosen]
    assert {r.path for r in per_class(records, k=3, seed=6)} != {r.path for r in chosen}
    with pytest.raises(ValueError, match=re.escape("too few of {'a': 10}")):
        per_class(records, k=11)


@pytest.mark.skipif(not NEU_ROOT.is_dir(), reason=f"NEU-DET not at {NEU_ROOT}")
def test_real_neu_det_reads_cleanly() -> None:
    records, classes = read_neu_det(NEU_ROOT)
    assert classes == list(NEU_CLASSES) and len(records) == 1800
    assert Counter(r.path.stem.rsplit("_", 1)[0] for r in records) == dict.fromkeys(NEU_CLASSES, 300)
    assert all(r.size == (416, 416) and len(r.labels) > 0 for r in records)
    boxes = torch.cat([r.boxes for r in records])
    assert boxes.min() >= 0 and boxes.max() <= 416
    assert bool((boxes[:, 2:] > boxes[:, :2]).all())
    assert all(r.path.stem.rsplit("_", 1)[0] in r.labels for r in records)  # the file's class is always boxed
