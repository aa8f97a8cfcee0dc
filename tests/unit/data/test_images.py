"""read_image: every bit depth, channel layout and format a camera writes; every bad file named with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdanomaly.data.images import UnreadableImageError, read_image


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_gray_keeps_its_precision(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 1, 257, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(values).save(tmp_path / f"g{suffix}")
    image = read_image(tmp_path / f"g{suffix}")
    assert image.shape == (3, 3, 4) and image.dtype == torch.float32
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    assert torch.allclose(image[0], expected) and torch.equal(image[0], image[2])
    assert image[0, 0, 1] > 0  # one 16-bit step survives (an 8-bit read would make it 0)


@pytest.mark.parametrize(
    ("mode", "suffix"), [("L", ".png"), ("RGB", ".jpg"), ("RGB", ".bmp"), ("RGBA", ".png"), ("P", ".png")]
)
def test_8_bit_layouts_come_back_as_rgb_in_unit_range(tmp_path: Path, mode: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert(mode)
    pixels.save(tmp_path / f"x{suffix}")
    image = read_image(tmp_path / f"x{suffix}")
    assert image.shape == (3, 20, 30) and image.min() >= 0 and image.max() <= 1
    if suffix != ".jpg":  # lossless formats come back exactly
        expected = torch.from_numpy(np.asarray(pixels.convert("RGB"))).permute(2, 0, 1).float() / 255
        assert torch.equal(image, expected)


def _write_bad_files(root: Path) -> dict[str, Path]:
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 90).save(root / "whole.jpg")
    whole = (root / "whole.jpg").read_bytes()
    files = {"truncated": root / "truncated.jpg", "empty": root / "empty.png", "text": root / "notes.png"}
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image")
    files["missing"] = root / "missing.png"
    files["folder"] = root / "folder.png"
    files["folder"].mkdir()
    return files


def test_every_bad_file_is_named_with_its_reason(tmp_path: Path) -> None:
    for kind, path in _write_bad_files(tmp_path).items():
        with pytest.raises(UnreadableImageError, match=f"cannot read image .*{path.name}") as caught:
            read_image(path)
        assert isinstance(caught.value, ValueError), kind
        if kind == "truncated":
            assert "truncated" in str(caught.value)
