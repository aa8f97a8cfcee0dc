"""Data: the embedded synthetic surface-defect generator, datamodules and labelled image folders."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(root: Path) -> list[Path]:
    """Image files (by suffix, any case) anywhere under ``root``, sorted."""
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def images_given(paths: list[Path]) -> list[Path]:
    """Command-line image arguments as files: folders expanded by :func:`image_files`, files kept; SystemExit if
    none remain."""
    files = [file for path in paths for file in (image_files(path) if path.is_dir() else [path])]
    if not files:
        raise SystemExit("no images given")
    return files
