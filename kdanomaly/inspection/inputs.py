"""What ``kdanomaly inspect`` reads: folders (searched recursively), glob patterns, list files and single files."""

from __future__ import annotations

import glob
import warnings
from collections.abc import Sequence
from pathlib import Path

from kdanomaly.data import image_files

LIST_SUFFIXES = (".txt", ".lst")
GLOB_CHARACTERS = "*?["


def _listed(list_file: Path) -> list[Path]:
    """Paths in a list file, one per line (blank lines and ``#`` comments skipped), relative to the file's folder."""
    lines = [line.strip() for line in list_file.read_text().splitlines()]
    return [list_file.parent / line for line in lines if line and not line.startswith("#")]


def _expand(item: str) -> list[Path]:
    if item.startswith("@"):
        return _listed(Path(item[1:]))
    path = Path(item)
    if path.is_dir():
        return image_files(path)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _listed(path)
    if any(character in item for character in GLOB_CHARACTERS) and not path.exists():
        return sorted(Path(match) for match in glob.glob(item, recursive=True) if Path(match).is_file())
    return [path]  # a single file; one that is missing or not an image gets its own error row


def collect_inputs(items: Sequence[str]) -> list[Path]:
    """Every input once (first occurrence kept), in the order given; folders and globs sorted.

    Raises:
        ValueError: nothing to inspect at all. A folder or pattern that matches nothing only warns.
    """
    seen: set[Path] = set()
    inputs: list[Path] = []
    for item in items:
        expanded = _expand(item)
        if not expanded:
            warnings.warn(f"{item} matches no images", stacklevel=2)
        for path in expanded:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                inputs.append(path)
    if not inputs:
        raise ValueError(f"no images to inspect in {list(items)}")
    return inputs
