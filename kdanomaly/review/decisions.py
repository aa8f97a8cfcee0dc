"""``RUN/decisions.jsonl``: the reviewer's decision on each image of an inspection run, one JSON line each.

A line is ``{"key", "decision", "type", "at"}``: the image's key (as in ``results.jsonl``), ``defect``,
``false_alarm`` or ``skip``, the defect type (a name for ``defect``, null otherwise) and when it was made (ISO-8601,
UTC). The log is only appended to; the latest line of a key is its decision, so a reviewer may change one.
Appending the decision a key already has appends nothing (two tabs sending the same click leave one line).

Each append holds a process-wide lock and an OS file lock (``decisions.jsonl.lock``) while it reads the log, writes
its line and fsyncs it, so threads and processes never interleave or duplicate lines, and a decision is on disk
once :func:`append_decision` returns. A kill can only tear the last line: readers ignore it and the next append cuts
it off. Readers take no lock.
"""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

DECISIONS_FILE = "decisions.jsonl"
LOCK_FILE = "decisions.jsonl.lock"
DECISION_KINDS = ("defect", "false_alarm", "skip")
MAX_TYPE_LENGTH = 64
LOCK_TIMEOUT_SECONDS = 30.0

_PROCESS_LOCK = threading.Lock()


def clean_type(decision: str, type_name: object) -> str | None:
    """The stored type of a ``decision``: a trimmed name for ``defect``; None otherwise (a blank name counts as none).

    Raises ValueError for a defect without a name, a name that is not 1-64 characters or holds a control character,
    and a name given with another decision.
    """
    if type_name is not None and not isinstance(type_name, str):
        raise ValueError(f"a defect type must be a string, got {type(type_name).__name__}")
    name = type_name.strip() if type_name is not None else ""
    if decision != "defect":
        if name:
            raise ValueError(f"only a defect has a type, not a {decision} decision (got type {name!r})")
        return None
    if not name:
        raise ValueError("a defect decision needs a type: a known defect type or a new name")
    if len(name) > MAX_TYPE_LENGTH:
        raise ValueError(f"a defect type must be 1-{MAX_TYPE_LENGTH} characters, got {len(name)}")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise ValueError(f"a defect type must not hold control characters, got {name!r}")
    return name


@dataclass(frozen=True)
class Decision:
    """One reviewer decision on image ``key``; ``at`` is ISO-8601 with a UTC offset. Checked on construction."""

    key: str
    decision: str
    type: str | None
    at: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"a decision needs the image's key (a non-empty string), got {self.key!r}")
        if self.decision not in DECISION_KINDS:
            raise ValueError(f"decision must be one of {', '.join(DECISION_KINDS)}, got {self.decision!r}")
        if self.decision != "defect" and self.type is not None:
            raise ValueError(f"only a defect has a type, not a {self.decision} decision (got type {self.type!r})")
        if self.decision == "defect" and clean_type(self.decision, self.type) != self.type:
            raise ValueError(f"defect type {self.type!r} has leading or trailing spaces")
        try:
            moment = datetime.fromisoformat(self.at)
        except (TypeError, ValueError) as error:
            raise ValueError(f"'at' must be an ISO-8601 time, got {self.at!r}") from error
        if moment.utcoffset() is None:
            raise ValueError(f"'at' must carry its UTC offset, got {self.at!r}")

    @classmethod
    def new(cls, key: str, decision: object, type_name: object = None) -> Decision:
        """A decision made now: the type trimmed (blank means none), checked as described in :func:`clean_type`.

        ``decision`` and ``type_name`` may be anything a client sent; ValueError unless they make a decision.
        """
        if not isinstance(decision, str) or decision not in DECISION_KINDS:
            raise ValueError(f"decision must be one of {', '.join(DECISION_KINDS)}, got {decision!r}")
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return cls(key, decision, clean_type(decision, type_name), at)

    @classmethod
    def from_row(cls, row: Any) -> Decision:
        """The decision of one parsed log line; ValueError if it is not one."""
        if not isinstance(row, dict) or set(row) != {"key", "decision", "type", "at"}:
            raise ValueError(f"a decision line holds exactly key, decision, type and at, got {row!r}")
        return cls(row["key"], row["decision"], row["type"], row["at"])

    def as_row(self) -> dict[str, str | None]:
        return asdict(self)

    def same_as(self, other: Decision) -> bool:
        """Whether both say the same about the same image (the time aside)."""
        return (self.key, self.decision, self.type) == (other.key, other.decision, other.type)


def _parse_log(data: bytes, path: Path) -> tuple[dict[str, Decision], int]:
    """Latest decision per key in the log's bytes, and the length of the part that is whole lines.

    A last line without its newline, or that is not JSON, is torn (a kill during its write) and left out; blank
    lines are skipped; any other bad line is an error naming the line.
    """
    lines = data.split(b"\n")  # the part after the last newline is empty, or a torn line
    decisions: dict[str, Decision] = {}
    length = 0
    for number, line in enumerate(lines[:-1], start=1):
        length += len(line) + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            if number == len(lines) - 1:
                return decisions, length - len(line) - 1
            raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
        try:
            decision = Decision.from_row(row)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from error
        decisions[decision.key] = decision
    return decisions, length


def read_decisions(run: Path) -> dict[str, Decision]:
    """The current decision of each decided image of ``run`` (the latest line per key); empty without a log."""
    path = Path(run) / DECISIONS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    return _parse_log(data, path)[0]


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def append_decision(run: Path, decision: Decision) -> Decision:
    """Append ``decision`` to ``run``'s log and fsync it; the key's decision now stored.

    If the key already has the same decision and type, nothing is appended and that earlier decision is returned.
    """
    run = Path(run)
    path = run / DECISIONS_FILE
    with _PROCESS_LOCK, FileLock(str(run / LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS):
        created = not path.exists()
        with path.open("ab+") as log:
            log.seek(0)
            data = log.read()
            current, whole = _parse_log(data, path)
            stored = current.get(decision.key)
            if stored is not None and stored.same_as(decision):
                return stored
            if whole != len(data):  # cut off a torn last line before appending after it
                log.truncate(whole)
            log.write(json.dumps(decision.as_row()).encode() + b"\n")
            log.flush()
            os.fsync(log.fileno())
        if created:
            _fsync_directory(run)
    return decision
