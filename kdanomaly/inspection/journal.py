"""The run folder of an inspection: its settings, and a journal of result rows appended as they are produced.

Each batch's rows are appended to ``journal.jsonl`` and fsynced, after the files they point to are written, so a
killed run loses at most the batch in flight. ``--resume`` continues a run with the same settings: the torn last
line a kill can leave is dropped and every image already in the journal is skipped, never scored twice. A folder
that holds anything else, or a run without ``--resume``, is refused: nothing is silently overwritten. Process ``r``
of a sharded run appends to ``journal-rank<r>.jsonl``; the images done are those of every journal in the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kdanomaly.files import write_bytes_atomic

from .outputs import FOLDERS

SETTINGS_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
JOURNALS = "journal*.jsonl"

Row = dict[str, Any]


class RunFolderError(ValueError):
    """An output folder that cannot be used: not empty and not this run."""


def _differences(stored: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(key for key in stored.keys() | current.keys() if stored.get(key) != current.get(key))
    return ", ".join(f"{key}: {stored.get(key)!r} then, {current.get(key)!r} now" for key in keys)


def _journal_rows(journal: Path) -> tuple[list[Row], int]:
    """Rows of the journal's complete lines and the bytes they take (a torn last line may follow them)."""
    if not journal.exists():
        return [], 0
    data = journal.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.decode().splitlines() if line.strip()], len(complete)


def journal_name(rank: int, world_size: int) -> str:
    """The journal a process appends to: ``journal.jsonl`` alone, ``journal-rank<r>.jsonl`` in a sharded run."""
    return JOURNAL_FILE if world_size == 1 else f"journal-rank{rank}.jsonl"


class RunFolder:
    """``out`` as the folder of a run with ``settings`` (model, threshold, memory, ...); see the module docstring."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool, journal: str = JOURNAL_FILE) -> None:
        self.out = Path(out)
        self.journal = self.out / journal
        settings_file = self.out / SETTINGS_FILE
        if self.out.exists() and not self.out.is_dir():
            raise RunFolderError(f"{self.out} is a file, not an output folder")
        journals = self._journals()
        rows = [row for found, _ in journals.values() for row in found]
        complete_bytes = journals.get(self.journal, ([], 0))[1]
        if self.out.exists() and any(self.out.iterdir()):
            if not settings_file.exists():
                raise RunFolderError(f"{self.out} is not empty and holds no inspection run; choose a new --out")
            stored = json.loads(settings_file.read_text())
            if not resume:
                raise RunFolderError(
                    f"{self.out} holds a run ({len(rows)} images done); pass --resume to continue it or choose a new"
                    " --out"
                )
            if stored != settings:
                raise RunFolderError(f"{self.out} holds a run with other settings ({_differences(stored, settings)})")
        for folder in FOLDERS.values():
            (self.out / folder).mkdir(parents=True, exist_ok=True)
        if not settings_file.exists():
            write_bytes_atomic(settings_file, json.dumps(settings, indent=2).encode())
        if self.journal.exists() and self.journal.stat().st_size != complete_bytes:
            with self.journal.open("r+b") as file:  # the torn line a kill can leave, cut only once the run continues
                file.truncate(complete_bytes)
        self.done = {row["key"] for row in rows}

    def all_rows(self) -> list[Row]:
        """The complete rows of every journal in the folder (all processes of the run)."""
        return [row for found, _ in self._journals().values() for row in found]

    def _journals(self) -> dict[Path, tuple[list[Row], int]]:
        """Every journal in the folder: its complete rows and the bytes they take."""
        return {path: _journal_rows(path) for path in sorted(self.out.glob(JOURNALS))}

    def append(self, rows: list[Row]) -> None:
        """Append rows to this process's journal and make them durable."""
        if not rows:
            return
        with self.journal.open("a", encoding="utf-8") as file:
            file.write("".join(json.dumps(row) + "\n" for row in rows))
            file.flush()
            os.fsync(file.fileno())
        self.done.update(row["key"] for row in rows)
