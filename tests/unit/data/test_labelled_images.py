"""Labelled images for the recognizer: class folders or file names, bad files named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdanomaly.data.labelled_images import list_labelled_images, load_images


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
