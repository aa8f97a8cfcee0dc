"""The inspection run folder: never silently overwritten, resumed only for the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdanomaly.inspection.journal import JOURNAL_FILE, RunFolder, RunFolderError


def test_run_folder_is_never_silently_overwritten_and_resumes_only_the_same_run(tmp_path: Path) -> None:
    settings = {"model_sha256": "abc", "threshold": 1.5}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no inspection run"):
        RunFolder(tmp_path / "other", settings, resume=True)
    run = RunFolder(tmp_path / "run", settings, resume=False)
    run.append([{"key": "/x/1.png", "status": "ok"}])
    with pytest.raises(RunFolderError, match=r"holds a run \(1 images done\); pass --resume"):
        RunFolder(tmp_path / "run", settings, resume=False)
    with pytest.raises(RunFolderError, match=r"threshold: 1\.5 then, 2\.0 now"):
        RunFolder(tmp_path / "run", settings | {"threshold": 2.0}, resume=True)
    with (tmp_path / "run" / JOURNAL_FILE).open("a") as journal:
        journal.write('{"key": "/x/2.png", "sta')  # a kill in the middle of a write
    torn = (tmp_path / "run" / JOURNAL_FILE).read_bytes()
    with pytest.raises(RunFolderError, match="pass --resume"):
        RunFolder(tmp_path / "run", settings, resume=False)
    assert (tmp_path / "run" / JOURNAL_FILE).read_bytes() == torn  # a refused run touches nothing
    resumed = RunFolder(tmp_path / "run", settings, resume=True)
    assert resumed.done == {"/x/1.png"}
    resumed.append([{"key": "/x/2.png", "status": "ok"}])
    lines = (tmp_path / "run" / JOURNAL_FILE).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["/x/1.png", "/x/2.png"]
