"""Inspection inputs: folders, globs and list files, each image once."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdanomaly.inspection.inputs import collect_inputs


def test_inputs_from_folders_globs_and_list_files_each_once(tmp_path: Path) -> None:
    for name in ("a/1.png", "a/sub/2.jpg", "b/3.tif", "b/readme.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# lot 7\nb/3.tif\n\na/1.png\nmissing.png\n")
    found = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.tif"), str(tmp_path / "list.txt")])
    relative = [str(p.relative_to(tmp_path)) for p in found]
    assert relative == ["a/1.png", "a/sub/2.jpg", "b/3.tif", "missing.png"]  # a missing listed file gets an error row
    assert collect_inputs([f"@{tmp_path / 'list.txt'}"])[0] == tmp_path / "b" / "3.tif"
    with pytest.warns(UserWarning, match="matches no images"), pytest.raises(ValueError, match="no images to inspect"):
        collect_inputs([str(tmp_path / "*.bmp")])
