"""Few-shot recognizer trained: enrolment without retraining, the fewshot command (also under DDP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdanomaly.models.recognizer import FewShotRecognizer
from tests.support import DDP_ON_TWO_CPU_PROCESSES, run_command

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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


def test_fewshot_command_trains_enrolls_and_classifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from torchvision.io import write_png

    from kdanomaly.cli import main

    for kind, name in enumerate(["stripes", "checks", "blobs"]):
        for index, image in enumerate(_textures(6, kind)):
            write_png((image * 255).to(torch.uint8), str(tmp_path / f"{name}_{index}.png"))
    checkpoint, memory = tmp_path / "recognizer.ckpt", tmp_path / "defects.kdm"
    common = ["--size", "64"]
    main(["fewshot", "train", "-c", str(CONFIGS / "recognizer" / "default.yaml"), "--data.root", str(tmp_path),
          "--data.classes", "[stripes, checks]", "--data.size", "64", "--data.batch_size", "8",
          "--trainer.max_epochs", "1", "--out", str(checkpoint)])  # fmt: skip
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
    output = run_command("fewshot", "train", "--data.root", tmp_path, "--out", checkpoint, "--trainer.max_epochs", "2",
                         "--data.batch_size", "4", "--data.size", "64", *DDP_ON_TWO_CPU_PROCESSES)  # fmt: skip
    assert "MEMBER: 2/2" in output and output.count("trained on 12 images") == 1  # printed by rank 0 only
    recognizer = FewShotRecognizer.load_from_checkpoint(checkpoint)
    assert recognizer.class_names == ["checks", "stripes"] and recognizer.embed(_textures(2, 0, 64)).shape[0] == 2
