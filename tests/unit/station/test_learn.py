"""The false alarms a station version's memory holds, for versions written before they were listed."""

from __future__ import annotations

import json
from pathlib import Path

from kdanomaly.review.decisions import Decision, append_decision
from kdanomaly.station import Station, Version
from kdanomaly.station.learn import held_false_alarms


def test_an_unlisted_version_reads_its_false_alarms_back_without_changing_its_parent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"key": "a", "path": "/images/a.png"}, {"key": "b", "path": "/images/b.png"}]
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    append_decision(run, Decision.new("a", "false_alarm"))
    append_decision(run, Decision.new("b", "defect", "scratch"))
    parent = Version(1, "v1/model.ckpt", "v1/model.ckpt", 0.5, false_alarms=["/images/old.png"])
    unlisted = Version(2, "v2/model.ckpt", "v2/model.ckpt", 0.5, parent=1,
                       learnt_from=[{"run": str(run), "keys": ["a", "b"]}])  # fmt: skip
    station = Station(tmp_path, 256, 0, 0.1, [], [], [], [parent, unlisted], 2)
    assert held_false_alarms(station, unlisted) == ["/images/old.png", "/images/a.png"]
    assert parent.false_alarms == ["/images/old.png"]
