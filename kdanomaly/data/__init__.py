"""Data: the embedded synthetic surface-defect generator, datamodules and labelled image folders."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(root: Path) -> list[Path]:
    """Image files (by suffix, any case) anywhere under ``root``, sorted."""
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
