"""The decision log: latest decision per image wins, nothing duplicated, torn or interleaved, bad decisions refused."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kdanomaly.review.decisions import DECISIONS_FILE, Decision, append_decision, read_decisions

APPENDS_PER_WORKER = 40


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / DECISIONS_FILE).read_text().splitlines()]


def test_decisions_round_trip_and_the_latest_per_image_wins(tmp_path: Path) -> None:
    assert read_decisions(tmp_path) == {}
    first = append_decision(tmp_path, Decision.new("/a.png", "defect", "  scratch "))
    assert first.type == "scratch"  # trimmed
    second = append_decision(tmp_path, Decision.new("/b.png", "skip"))
    assert read_decisions(tmp_path) == {"/a.png": first, "/b.png": second}
    moment = datetime.fromisoformat(first.at)
    assert moment.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - moment).total_seconds()) < 60
    changed = append_decision(tmp_path, Decision.new("/a.png", "false_alarm", ""))  # a blank type is no type
    assert changed.type is None
    again = append_decision(tmp_path, Decision.new("/a.png", "defect", "scratch"))
    decisions = read_decisions(tmp_path)
    assert decisions["/a.png"] == again and decisions["/b.png"].decision == "skip"
    assert [(row["key"], row["decision"], row["type"]) for row in _lines(tmp_path)] == [
        ("/a.png", "defect", "scratch"),
        ("/b.png", "skip", None),
        ("/a.png", "false_alarm", None),
        ("/a.png", "defect", "scratch"),
    ]


def test_the_same_decision_again_appends_nothing(tmp_path: Path) -> None:
    first = append_decision(tmp_path, Decision.new("/a.png", "defect", "dent"))
    assert append_decision(tmp_path, Decision.new("/a.png", "defect", " dent")) == first
    append_decision(tmp_path, Decision.new("/a.png", "defect", "crack"))  # another type is another decision
    assert [row["type"] for row in _lines(tmp_path)] == ["dent", "crack"]


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_append(tmp_path: Path) -> None:
    kept = append_decision(tmp_path, Decision.new("/a.png", "skip"))
    whole_but_unfinished = json.dumps(Decision.new("/b.png", "skip").as_row())  # no newline: never acknowledged
    for torn in ('{"key": "/b.png", "decis', whole_but_unfinished, "\x00" * 12 + "\n"):
        with (tmp_path / DECISIONS_FILE).open("a") as log:
            log.write(torn)
        assert read_decisions(tmp_path) == {"/a.png": kept}
        later = append_decision(tmp_path, Decision.new("/c.png", "false_alarm"))
        assert read_decisions(tmp_path) == {"/a.png": kept, "/c.png": later}
        (tmp_path / DECISIONS_FILE).write_text(json.dumps(kept.as_row()) + "\n")
    (tmp_path / DECISIONS_FILE).write_text("\n" + json.dumps(kept.as_row()) + "\n\n")
    assert read_decisions(tmp_path) == {"/a.png": kept}  # blank lines are no damage
    (tmp_path / DECISIONS_FILE).write_text('not json\n{"key": "/a.png"}\n')
    with pytest.raises(ValueError, match=r"line 1: not JSON"):  # damage before the last line is not a tear
        read_decisions(tmp_path)


@pytest.mark.parametrize(
    ("decision", "type_name", "message"),
    [
        ("maybe", None, "decision must be one of defect, false_alarm, skip, got 'maybe'"),
        (None, None, "decision must be one of"),
        ("defect", None, "a defect decision needs a type"),
        ("defect", "   ", "a defect decision needs a type"),
        ("defect", "x" * 65, "1-64 characters, got 65"),
        ("defect", "scr\natch", "must not hold control characters"),
        ("defect", "a\x00", "must not hold control characters"),
        ("defect", 7, "must be a string, got int"),
        ("false_alarm", "scratch", "only a defect has a type, not a false_alarm decision"),
        ("skip", "dent", "only a defect has a type"),
    ],
)
def test_bad_decisions_are_refused_with_the_reason(decision: object, type_name: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Decision.new("/a.png", decision, type_name)
    assert Decision.new("/a.png", "defect", "x" * 64).type == "x" * 64  # the longest name is taken


def test_decision_fields_are_checked_when_read_back(tmp_path: Path) -> None:
    good = Decision.new("/a.png", "skip").as_row()
    for bad, message in [
        (good | {"key": ""}, "needs the image's key"),
        (good | {"type": "dent"}, "only a defect has a type"),
        (good | {"at": "yesterday"}, "ISO-8601"),
        (good | {"at": "2024-05-01T10:00:00"}, "UTC offset"),
        (good | {"extra": 1}, "exactly key, decision, type and at"),
    ]:
        (tmp_path / DECISIONS_FILE).write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
        with pytest.raises(ValueError, match=f"line 1: .*{message}"):
            read_decisions(tmp_path)


def _append_many(run: Path, worker: str, start: threading.Barrier | multiprocessing.synchronize.Barrier) -> None:
    """Each worker, once all have started: its own images, and the same shared images every worker decides alike."""
    start.wait()
    for index in range(APPENDS_PER_WORKER):
        append_decision(run, Decision.new(f"/{worker}/{index}.png", "defect", f"type {worker}"))
        append_decision(run, Decision.new(f"/shared/{index}.png", "false_alarm"))


def _check_log(run: Path, workers: list[str]) -> None:
    data = (run / DECISIONS_FILE).read_bytes()
    assert data.endswith(b"\n")
    lines = _lines(run)  # every line whole JSON: none interleaved
    own = {(row["key"], row["type"]) for row in lines if not row["key"].startswith("/shared/")}
    assert own == {(f"/{w}/{i}.png", f"type {w}") for w in workers for i in range(APPENDS_PER_WORKER)}
    shared = [row["key"] for row in lines if row["key"].startswith("/shared/")]
    assert sorted(shared) == sorted(f"/shared/{i}.png" for i in range(APPENDS_PER_WORKER))  # each once
    assert len(lines) == len(own) + len(shared)


def test_concurrent_threads_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    workers = [f"t{index}" for index in range(4)]
    start = threading.Barrier(len(workers))
    threads = [threading.Thread(target=_append_many, args=(tmp_path, name, start)) for name in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_log(tmp_path, workers)


def test_concurrent_processes_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: only the file lock is shared
    workers = ["p0", "p1"]
    start = context.Barrier(len(workers))
    processes = [context.Process(target=_append_many, args=(tmp_path, name, start)) for name in workers]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    _check_log(tmp_path, workers)
