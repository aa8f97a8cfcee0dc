"""Few-shot recognizer: losses against hand computations, views, training, enrolment without retraining."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import DDP_ON_TWO_CPU_PROCESSES, run_command

from kdanomaly.data.labelled_images import list_labelled_images, load_images
from kdanomaly.models.recognizer import FewShotRecognizer
from kdanomaly.models.recognizer.augment import DefectViews
from kdanomaly.models.recognizer.loss import ArcFaceLoss, nt_xent, self_contrastive_loss


def _hand_nt_xent(first: list[list[float]], second: list[list[float]], temperature: float) -> float:
    rows = [[x / math.hypot(*row) for x in row] for row in first + second]
    n, total = len(first), 0.0
    for i, anchor in enumerate(rows):
        positive = (i + n) % (2 * n)
        similarity = [sum(a * b for a, b in zip(anchor, other, strict=True)) / temperature for other in rows]
        denominator = sum(math.exp(s) for k, s in enumerate(similarity) if k != i)
        total += -math.log(math.exp(similarity[positive]) / denominator)
    return total / (2 * n)


def test_nt_xent_matches_a_hand_computation() -> None:
    first, second = [[1.0, 0.0], [0.6, 0.8]], [[0.8, 0.6], [0.0, 1.0]]
    expected = _hand_nt_xent(first, second, 0.5)
    assert float(nt_xent(torch.tensor(first), torch.tensor(second), 0.5)) == pytest.approx(expected, rel=1e-5)
    third = [[-1.0, 0.2], [0.3, -0.9]]
    averaged = (expected + _hand_nt_xent(first, third, 0.5) + _hand_nt_xent(second, third, 0.5)) / 3
    combined = self_contrastive_loss(torch.tensor(first), torch.tensor(second), torch.tensor(third), 0.5)
    assert float(combined) == pytest.approx(averaged, rel=1e-5)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent(torch.ones(1, 2), torch.ones(1, 2))


def test_arcface_adds_the_angular_margin_to_the_true_class_only() -> None:
    loss = ArcFaceLoss(embedding_size=2, num_classes=2, margin=0.5, scale=10.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angle = math.radians(30)
    embedding = torch.tensor([[math.cos(angle), math.sin(angle)]])
    logits = loss.logits(embedding, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(angle + 0.5), rel=1e-5)  # true class: cos(theta + m)
    assert logits[0, 1].item() == pytest.approx(10 * math.sin(angle), rel=1e-5)  # other class: plain cosine
    expected = -math.log(math.exp(10 * math.cos(angle + 0.5)) / (math.exp(10 * math.cos(angle + 0.5)) + math.exp(5)))
    assert float(loss(embedding, torch.tensor([0]))) == pytest.approx(expected, rel=1e-5)
    opposite = loss.logits(torch.tensor([[-1.0, 0.01]]), torch.tensor([0]))  # theta + m beyond pi: stays monotone
    assert opposite[0, 0].item() == pytest.approx(10 * (math.cos(math.pi - 0.01) - 0.5 * math.sin(0.5)), abs=1e-3)


def test_views_are_rotations_and_flips_of_the_whole_image_at_full_scale() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    views = DefectViews(scale=(1.0, 1.0))(images)
    assert views.shape == images.shape
    for image, view in zip(images, views, strict=True):
        symmetries = [torch.rot90(image, k, (-2, -1)).flip(f) for k in range(4) for f in ([], [-1], [-2], [-1, -2])]
        assert any(torch.allclose(view, candidate, atol=1e-5) for candidate in symmetries)
    with pytest.raises(ValueError, match="square"):
        DefectViews()(torch.rand(1, 3, 16, 12))


def _textures(n: int, kind: int, size: int = 32) -> torch.Tensor:
    """Stripes (0), checkerboards (1) or blobs (2), random phase: three easy, distinct classes."""
    generator = torch.Generator().manual_seed(kind)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = []
    for _ in range(n):
        phase = float(torch.rand((), generator=generator)) * 6.28
        pattern = [torch.sin(x * 0.8 + phase), torch.sin(x * 0.8 + phase) * torch.sin(y * 0.8), (x - 16) ** 2 < 40]
        images.append((pattern[kind].float() * 0.5 + 0.5).expand(3, size, size))
    return torch.stack(images)


@pytest.mark.slow
@pytest.mark.parametrize(("match_on", "dim"), [("backbone", 1280), ("projection", 16)])
def test_training_lowers_the_loss_and_enrolment_changes_predictions_without_changing_weights(
    match_on: str, dim: int
) -> None:
    torch.manual_seed(0)
    recognizer = FewShotRecognizer(
        ["stripes", "checks"], pretrained=False, embedding_size=16, hidden_size=32, match_on=match_on
    )
    images = torch.cat([_textures(8, 0), _textures(8, 1)])
    labels = torch.tensor([0] * 8 + [1] * 8)
    optimizer = recognizer.configure_optimizers()
    recognizer.train()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = recognizer.training_step((images, labels), 0)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert sum(losses[-3:]) < sum(losses[:3])
    weights = {name: value.clone() for name, value in recognizer.state_dict().items()}
    memory = recognizer.enroll(images[::4], ["stripes"] * 2 + ["checks"] * 2)
    assert memory.dim == recognizer.embedding_dim == dim
    blobs = _textures(4, 2)
    assert "blobs" not in recognizer.predict_types(blobs, memory).labels
    recognizer.enroll(blobs[:2], ["blobs", "blobs"], memory)
    assert recognizer.predict_types(blobs[2:], memory).labels == ["blobs", "blobs"]
    assert all(torch.equal(value, weights[name]) for name, value in recognizer.state_dict().items())
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        recognizer.enroll(images[:2], ["stripes"])
    with pytest.raises(ValueError, match="match_on must be"):
        FewShotRecognizer(["stripes"], pretrained=False, match_on="pixels")


def test_labelled_images_from_class_folders_or_names_and_bad_files_named(tmp_path: Path) -> None:
    from torchvision.io import write_png

    for folder, name in [("flat", "crazing_1.png"), ("flat", "rolled-in_scale_2.png"), ("nested/pits", "a.png")]:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        write_png((torch.rand(1, 20, 30) * 255).to(torch.uint8), str(tmp_path / folder / name))
    flat = list_labelled_images(tmp_path / "flat")
    assert flat.labels == ["crazing", "rolled-in_scale"] and flat.classes == ["crazing", "rolled-in_scale"]
    assert list_labelled_images(tmp_path / "nested").labels == ["pits"]
    images = load_images(flat.paths, 16)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[:, 0], images[:, 1])  # gray repeated to RGB
    with pytest.raises(ValueError, match="no images of"):
        flat.of(["scratches"])
    (tmp_path / "flat" / "broken_3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken_3\.png"):
        load_images(list_labelled_images(tmp_path / "flat").paths, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        list_labelled_images(tmp_path / "empty")
    (tmp_path / "nameless").mkdir()
    write_png(torch.zeros(1, 4, 4, dtype=torch.uint8), str(tmp_path / "nameless" / "x.png"))
    with pytest.raises(ValueError, match="cannot tell the class"):
        list_labelled_images(tmp_path / "nameless")


def test_fewshot_command_trains_enrolls_and_classifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from torchvision.io import write_png

    from kdanomaly.cli import main

    for kind, name in enumerate(["stripes", "checks", "blobs"]):
        for index, image in enumerate(_textures(6, kind)):
            write_png((image * 255).to(torch.uint8), str(tmp_path / f"{name}_{index}.png"))
    checkpoint, memory = tmp_path / "recognizer.ckpt", tmp_path / "defects.kdm"
    common = ["--size", "64"]
    main(["fewshot", "train", "--data", str(tmp_path), "--classes", "stripes", "checks", "--out", str(checkpoint),
          "--epochs", "1", "--batch-size", "8", *common])  # fmt: skip
    main(["fewshot", "enroll", "--model", str(checkpoint), "--data", str(tmp_path), "--memory", str(memory), *common])
    capsys.readouterr()
    main(["fewshot", "classify", "--model", str(checkpoint), "--memory", str(memory), str(tmp_path), *common])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 18 and {row["type"] for row in rows} <= {"stripes", "checks", "blobs"}
    assert all(-1 <= row["similarity"] <= 1 for row in rows)


def test_fewshot_command_trains_under_ddp_to_one_checkpoint(tmp_path: Path) -> None:
    from torchvision.io import write_png

    for kind, name in enumerate(["stripes", "checks"]):
        for index, image in enumerate(_textures(6, kind)):
            write_png((image * 255).to(torch.uint8), str(tmp_path / f"{name}_{index}.png"))
    checkpoint = tmp_path / "recognizer.ckpt"
    output = run_command("fewshot", "train", "--data", tmp_path, "--out", checkpoint, "--epochs", "2",
                         "--batch-size", "4", "--size", "64", *DDP_ON_TWO_CPU_PROCESSES)  # fmt: skip
    assert "MEMBER: 2/2" in output and output.count("trained on 12 images") == 1  # printed by rank 0 only
    recognizer = FewShotRecognizer.load_from_checkpoint(checkpoint)
    assert recognizer.class_names == ["checks", "stripes"] and recognizer.embed(_textures(2, 0, 64)).shape[0] == 2
