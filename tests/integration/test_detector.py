"""Few-shot detector trained: every part trained, enrolment, the detect command (also under DDP)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from kdanomaly.cli import main
from kdanomaly.models.detector import FewShotDetector
from tests.support import DDP_ON_TWO_CPU_PROCESSES, run_command

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

Scenes = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


def _boxed_scenes(count: int, size: int = 96, seed: int = 0) -> Scenes:
    """Gray noise with one bright horizontal bar (class 1) and one dark square (class 2) at random places."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(count):
        image = 0.5 + 0.05 * torch.randn(3, size, size, generator=generator)
        x, y = torch.randint(4, size - 60, (2,), generator=generator).tolist()
        image[:, y : y + 8, x : x + 50] = 0.95
        u, v = torch.randint(4, size - 28, (2,), generator=generator).tolist()
        while abs(v - y) < 26:
            v = int(torch.randint(4, size - 28, (1,), generator=generator))
        image[:, v : v + 24, u : u + 24] = 0.05
        images.append(image.clamp(0, 1))
        boxes = torch.tensor([[x, y, x + 50, y + 8], [u, v, u + 24, v + 24]], dtype=torch.float32)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2])})
    return images, targets


@pytest.fixture(scope="module")
def trained_detector() -> tuple[FewShotDetector, float, float]:
    """A detector trained on one fixed batch of synthetic scenes; its loss on that batch before and after."""
    torch.manual_seed(0)
    detector = FewShotDetector(["bar", "square"], image_size=96, pretrained=False)
    images, targets = _boxed_scenes(4)
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-3)
    detector.train()

    def loss() -> torch.Tensor:
        return torch.stack(list(detector.model(images, targets).values())).sum()

    torch.manual_seed(1)
    with torch.no_grad():
        before = float(loss())
    for _ in range(12):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(loss())
    return detector, before, after


def test_training_steps_lower_the_loss_and_every_part_is_trained(trained_detector) -> None:
    detector, before, after = trained_detector
    assert after < 0.7 * before
    losses = detector.model(*_boxed_scenes(2, seed=5))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_contrastive"}


def test_enrolment_changes_predictions_without_changing_weights(trained_detector) -> None:
    detector, _, _ = trained_detector
    images, targets = _boxed_scenes(2, seed=3)
    weights = {k: v.clone() for k, v in detector.state_dict().items()}
    bars = [t["boxes"][:1] for t in targets]
    memory = detector.enroll(images, bars, [["bar"]] * 2)
    only_bars = detector.detect(images, memory, min_score=0.0)  # every proposal, named by the memory
    assert only_bars[0]["boxes"].shape[1] == 4 and set(only_bars[0]["labels"]) == {"bar"}
    squares = [t["boxes"][1:] for t in targets]
    detector.enroll(images, squares, [["square"]] * 2, memory)
    both = detector.detect(images, memory, min_score=0.0)
    assert "square" in both[0]["labels"] + both[1]["labels"]
    assert len(detector.detect(images, memory, min_score=1.01)[0]["labels"]) == 0
    assert all(torch.equal(v, detector.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(ValueError, match="N labels"):
        detector.enroll(images[:1], [torch.zeros(2, 4)], [["bar"]])


def test_trained_classes_come_back_as_names(trained_detector) -> None:
    detector, _, _ = trained_detector
    detections = detector.detect(_boxed_scenes(1, seed=7)[0])
    assert set(detections[0]["labels"]) <= {"bar", "square"}
    assert len(detections[0]["labels"]) == len(detections[0]["scores"]) == len(detections[0]["boxes"])
    threshold = detector.model.roi_heads.score_thresh
    strict = detector.detect(_boxed_scenes(1, seed=7)[0], min_score=0.2)
    assert len(strict[0]["scores"]) <= len(detections[0]["scores"]) and bool((strict[0]["scores"] >= 0.2).all())
    assert detector.model.roi_heads.score_thresh == threshold  # a call's min_score does not stick to the model


def _write_voc(root: Path, scenes: Scenes, names: tuple[str, ...]) -> tuple[Path, Path]:
    """The scenes as PNG files and Pascal VOC xml (in a 2x smaller annotation frame, as NEU-DET's are)."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for index, (image, target) in enumerate(zip(*scenes, strict=True)):
        write_png((image * 255).to(torch.uint8), str(images / f"scene_{index}.png"))
        objects = "".join(
            f"<object><name>{names[int(label) - 1]}</name><bndbox><xmin>{x0 / 2}</xmin><ymin>{y0 / 2}</ymin>"
            f"<xmax>{x1 / 2}</xmax><ymax>{y1 / 2}</ymax></bndbox></object>"
            for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"], strict=True)
        )
        size = f"<size><width>{image.shape[2] // 2}</width><height>{image.shape[1] // 2}</height></size>"
        (annotations / f"scene_{index}.xml").write_text(f"<annotation>{size}{objects}</annotation>")
    return images, annotations


def test_detect_cli_trains_enrolls_and_writes_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, annotations = _write_voc(tmp_path / "data", _boxed_scenes(6), ("bar", "square"))
    model, memory, out = tmp_path / "detector.ckpt", tmp_path / "memory.faiss", tmp_path / "predicted"
    main(["detect", "train", "-c", str(CONFIGS / "detector" / "default.yaml"), "--data.images", str(images),
          "--data.annotations", str(annotations), "--data.test_fraction", "0.34", "--data.image_size", "96",
          "--trainer.max_epochs", "1", "--out", str(model)])  # fmt: skip
    assert "held-out mAP@0.5" in capsys.readouterr().out and model.is_file()
    enroll = ["--images", str(images), "--annotations", str(annotations), "--classes", "bar", "square"]
    main(["detect", "enroll", "--model", str(model), *enroll, "--memory", str(memory)])
    assert "12 box references of ['bar', 'square']" in capsys.readouterr().out
    main(
        [
            "detect",
            "predict",
            "--model",
            str(model),
            "--memory",
            str(memory),
            "--min-score",
            "0",
            "--out",
            str(out),
            str(images),
        ]
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["boxes"]) == len(r["labels"]) == len(r["scores"]) > 0 for r in rows)
    assert {label for r in rows for label in r["labels"]} <= {"bar", "square"}
    assert len(list(out.glob("scene_*.png"))) == 6
    with pytest.raises(ValueError, match="do not occur"):
        main(["detect", "enroll", "--model", str(model), *enroll[:4], "--classes", "dent", "--memory", str(memory)])


def test_detect_train_under_ddp_writes_one_checkpoint_and_prints_once(tmp_path: Path) -> None:
    images, annotations = _write_voc(tmp_path / "data", _boxed_scenes(7), ("bar", "square"))
    model = tmp_path / "detector.ckpt"
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from kdanomaly.data.detection import DetectionDataset, collate, read_annotated, split

    data = ["--data.images", images, "--data.annotations", annotations, "--data.test_fraction", "0.43"]
    budget = ["--data.image_size", "96", "--trainer.max_epochs", "8", "--data.batch_size", "1"]
    output = run_command("detect", "train", *data, *budget, "--out", model, *DDP_ON_TWO_CPU_PROCESSES)
    assert "MEMBER: 2/2" in output and output.count("held-out mAP@0.5") == 1  # printed by rank 0 only
    detector = FewShotDetector.load_from_checkpoint(model)
    assert detector.class_names == ["bar", "square"]
    # the 3 held-out images scored 2 + 1 by the two processes give the mAP of one process scoring all 3
    held_out = split(read_annotated(images, annotations)[0], 0.43, 0)[1]
    assert len(held_out) == 3
    loader = DataLoader(DetectionDataset(held_out, detector.class_names, 96), 8, collate_fn=collate)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    one_process = trainer.validate(detector, loader, verbose=False)[0]["map_50"]
    assert one_process > 0.1 and re.search(r"held-out mAP@0.5 (\S+):", output)[1] == f"{one_process:.4f}"
