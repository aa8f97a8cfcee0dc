"""An inspection station on disk: ``STATION/station.json`` and one folder per model version.

::

    STATION/
      station.json   image size, seed, the split of the good images, false-review rate, versions, current version
      work/          fit's resumable state (the split's training links, Lightning checkpoints); kept for resumes
      v1/            model.ckpt (calibrated), export/ (OpenVINO, when installed), types.kdm (defect types, once any)
      v2/ ...        each ``kdanomaly learn`` writes the next version; earlier ones stay untouched

``station.json`` is replaced atomically and last: a version exists once it is listed there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdanomaly.files import write_bytes_atomic

STATION_FILE = "station.json"
FORMAT = 1


class StationError(ValueError):
    """A folder that is not a station, or a request the station cannot honour."""


@dataclass
class Version:
    """One model of the station. Paths are relative to the station folder."""

    number: int
    checkpoint: str
    model: str
    threshold: float
    defect_types: str | None = None
    parent: int | None = None
    learnt_from: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    # images the normal memory holds beside the training images (confirmed false alarms, absolute paths, oldest
    # first); None in versions written before the list was kept
    false_alarms: list[str] | None = None


@dataclass
class Station:
    """What ``kdanomaly fit`` decided and every version since; :meth:`save` writes it."""

    root: Path
    image_size: int
    seed: int
    false_review_rate: float
    training_images: list[str]
    calibration_images: list[str]
    skipped: list[dict[str, str]]
    versions: list[Version]
    current: int

    @classmethod
    def load(cls, root: Path) -> Station:
        path = root / STATION_FILE
        if not path.is_file():
            raise StationError(f"{root} is not a station (no {STATION_FILE}): make one with `kdanomaly fit GOOD_DIR`")
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise StationError(f"{path}: format {record.get('format')!r}, this kdanomaly reads format {FORMAT}")
        versions = [Version(**version) for version in record.pop("versions")]
        record.pop("format")
        return cls(root=root, versions=versions, **record)

    def save(self) -> None:
        record = {"format": FORMAT} | {key: value for key, value in asdict(self).items() if key != "root"}
        write_bytes_atomic(self.root / STATION_FILE, json.dumps(record, indent=2).encode())

    def version(self, number: int | None = None) -> Version:
        """Version ``number`` (default: the current one)."""
        wanted = self.current if number is None else number
        for version in self.versions:
            if version.number == wanted:
                return version
        raise StationError(f"{self.root} has no version {wanted}")

    def path(self, relative: str) -> Path:
        return self.root / relative


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the station folder ``root`` (stations can be moved)."""
    return str(path.resolve().relative_to(root.resolve()))
