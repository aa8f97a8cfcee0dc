"""The station's day: `kdanomaly fit` from a folder of good images, `inspect --station`, review decisions,
`kdanomaly learn` (false alarms into the normal memory, defect types enrolled), `--undo`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdanomaly.cli import main
from kdanomaly.data import image_files
from kdanomaly.files import sha256_of
from kdanomaly.review.decisions import Decision, append_decision
from kdanomaly.station import Station
from kdanomaly.station.learn import held_false_alarms
from tests.support import CATEGORY, IMAGE_SIZE, TrainedRun

SIZE = 64  # the station's image size: small, these tests train
STEPS = 40  # training steps of the stations here
QUICK = ["--image-size", str(SIZE), "--false-review-rate", "0.2", "--no-progress", "--workers", "0"]


def _rows(run: Path) -> dict[str, dict]:
    return {row["key"]: row for row in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def good_folder(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic training images as a user's folder: some resized to other sizes, one file not an image."""
    folder = tmp_path_factory.mktemp("good")
    for index, path in enumerate(image_files(synthetic_root / CATEGORY / "train" / "good")):
        image = Image.open(path)
        if index % 4 == 1:
            image = image.resize((96, 80))
        image.save(folder / f"part_{index:03d}.png")
    (folder / "part_999.png").write_bytes(b"not an image")
    return folder


@dataclass
class FittedStation:
    """A station fitted by a `fit` killed after its first checkpoint and run again; what the second run printed."""

    root: Path
    stopped_at_step: int
    resumed_output: str


@pytest.fixture(scope="module")
def fitted(good_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> FittedStation:
    out = tmp_path_factory.mktemp("stations") / "line1"
    # 400 steps: a checkpoint every 5 epochs of the 32 training images, the first at step 20, before STEPS
    command = [sys.executable, "-m", "kdanomaly.cli", "fit", str(good_folder), "--out", str(out), "--steps", "400",
               *QUICK]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    last = out / "work" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # as soon as the first checkpoint appears: it appears whole
    process.wait()
    assert last.is_file(), process.stderr.read().decode()[-2000:] if process.stderr else ""
    assert not (out / "station.json").exists()
    stopped = torch.load(last, weights_only=False)["global_step"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["fit", str(good_folder), "--out", str(out), "--steps", str(STEPS), *QUICK]) == 0
    return FittedStation(out, stopped, printed.getvalue())


@pytest.fixture(scope="module")
def station(fitted: FittedStation) -> Path:
    return fitted.root


@pytest.fixture(scope="module")
def trained_station(trained: TrainedRun, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station around the session's trained KDAnomaly (128 px, sharper maps than the quick fits here), written
    as before versions listed their false alarms: its threshold calibrated at 20 % on 20 good images of another
    seed, held out as `fit` holds them out."""
    from kdanomaly.data.synthetic import generate_synthetic_dataset
    from kdanomaly.inspection.calibration import calibrate, store_calibration
    from kdanomaly.inspection.run import InspectOptions, normal_scores
    from kdanomaly.station import Version

    root = tmp_path_factory.mktemp("stations") / "trained"
    (root / "v1").mkdir(parents=True)
    held_out = generate_synthetic_dataset(tmp_path_factory.mktemp("held_out"), CATEGORY, IMAGE_SIZE, n_train=20,
                                          n_test_good=1, n_test_per_defect=1, seed=1)  # fmt: skip
    calibration_images = image_files(held_out / "train" / "good")
    options = InspectOptions(progress=False, workers=0, engine="torch")
    scores, _ = normal_scores(trained.checkpoint, calibration_images, options)
    calibration = calibrate(scores, 0.2)
    store_calibration(trained.checkpoint, calibration, root / "v1" / "model.ckpt")
    training_images = [str(path.resolve()) for path in image_files(synthetic_root / CATEGORY / "train" / "good")]
    Station(
        root, IMAGE_SIZE, 0, 0.2, training_images, [str(path.resolve()) for path in calibration_images], [],
        [Version(1, "v1/model.ckpt", "v1/model.ckpt", calibration.threshold)], 1,
    ).save()  # fmt: skip
    return root


def test_a_killed_fit_resumes_where_it_stopped(fitted: FittedStation) -> None:
    assert 0 < fitted.stopped_at_step < STEPS
    assert "resuming the fit after epoch" in fitted.resumed_output
    checkpoints = fitted.root / "work" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == STEPS
    assert not list(checkpoints.glob("*.partial"))


def test_fit_splits_trains_calibrates_and_skips_what_it_cannot_read(station: Path, good_folder: Path) -> None:
    record = json.loads((station / "station.json").read_text())
    training, calibration = set(record["training_images"]), set(record["calibration_images"])
    readable = {str(path.resolve()) for path in good_folder.glob("part_0*.png")}
    assert not training & calibration and training | calibration == readable
    assert len(calibration) == 8  # 20 % of 40 (the rate needs only 4)
    assert [Path(skip["path"]).name for skip in record["skipped"]] == ["part_999.png"]
    version = record["versions"][0]
    assert record["current"] == 1 and version["threshold"] == pytest.approx(
        torch.load(station / version["checkpoint"], weights_only=False)["kdanomaly_calibration"]["threshold"]
    )
    assert (station / version["model"]).suffix == ".xml"  # exported for OpenVINO, installed here


def test_fit_with_too_few_images_says_how_many_and_leaves_nothing(good_folder: Path, tmp_path: Path) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(good_folder.glob("part_0*.png"))[:12]:
        shutil.copy(path, few / path.name)
    with pytest.raises(SystemExit, match=r"12 readable good images are too few.*needs 99.*at least 107"):
        main(["fit", str(few), "--out", str(tmp_path / "station"), "--image-size", str(SIZE), "--no-progress"])
    assert not (tmp_path / "station").exists()
    with pytest.raises(SystemExit, match="no images"):
        main(["fit", str(tmp_path / "empty_*"), "--out", str(tmp_path / "station"), "--no-progress"])
    assert not (tmp_path / "station").exists()


def test_learn_quiets_false_alarms_keeps_defects_names_new_types_and_undoes(
    trained_station: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    station = trained_station
    test_root = synthetic_root / CATEGORY / "test"
    first_run = tmp_path / "run1"
    quiet = ["--no-progress", "--workers", "0"]
    assert main(["inspect", str(test_root), "--station", str(station), "--out", str(first_run), *quiet]) == 0
    rows = _rows(first_run)
    threshold = json.loads((station / "station.json").read_text())["versions"][0]["threshold"]
    by_kind: dict[str, list[dict]] = {}
    for row in sorted(rows.values(), key=lambda row: row["path"]):
        if row["decision"] == "review" or Path(row["path"]).parent.name == "good":  # defects in the review queue
            by_kind.setdefault(Path(row["path"]).parent.name, []).append(row)
    false_alarm = max(by_kind["good"], key=lambda row: row["score"])  # the good image that looks most anomalous
    assert false_alarm["score"] > threshold, "with 20 % false reviews some good test image should be one"
    held_out = by_kind.get("crack", []) + by_kind.get("contamination", [])
    assert held_out and len(by_kind["scratch"]) >= 3 and len(by_kind["spot"]) >= 3, "the model should catch defects"
    append_decision(first_run, Decision.new(false_alarm["key"], "false_alarm"))
    for kind in ("scratch", "spot"):
        for row in by_kind[kind][:2]:
            append_decision(first_run, Decision.new(row["key"], "defect", kind))
    version_one = {path: sha256_of(path) for path in (station / "v1").rglob("*") if path.is_file()}

    assert main(["learn", str(first_run), "--station", str(station)]) == 0
    record = json.loads((station / "station.json").read_text())
    assert record["current"] == 2 and record["versions"][1]["learnt_from"][0]["false_alarms"] == 1
    assert record["versions"][1]["false_alarms"] == [false_alarm["path"]]
    statistics = [
        torch.load(station / f"v{n}" / "model.ckpt", weights_only=False)["state_dict"]["model.map_statistics.values"]
        for n in (1, 2)
    ]
    assert not torch.equal(*statistics)  # the fusion statistics re-derived with the false alarm among the normals
    assert {path: sha256_of(path) for path in (station / "v1").rglob("*") if path.is_file()} == version_one
    second_run = tmp_path / "run2"
    assert main(["inspect", str(test_root), "--station", str(station), "--out", str(second_run), *quiet]) == 0
    after, new_threshold = _rows(second_run), record["versions"][1]["threshold"]
    assert after[false_alarm["key"]]["score"] <= new_threshold and after[false_alarm["key"]]["decision"] == "pass"
    assert all(after[row["key"]]["decision"] == "review" for row in held_out)
    for kind in ("scratch", "spot"):  # a third example of each type, never enrolled, is named by it
        third = after[by_kind[kind][2]["key"]]
        assert third["decision"] == "review" and third["regions"][0]["type"] == kind
    assert json.loads((second_run / "run.json").read_text())["defect_types"] == ["scratch", "spot"]

    written_before = Station.load(station)  # as a version written before the list was kept: read from the run
    written_before.versions[1].false_alarms = None
    assert held_false_alarms(written_before, written_before.versions[1]) == [false_alarm["path"]]

    with pytest.raises(SystemExit, match="nothing to learn"):
        main(["learn", str(first_run), "--station", str(station)])  # the same decisions are not learnt twice
    assert main(["learn", "--undo", "--station", str(station)]) == 0
    assert json.loads((station / "station.json").read_text())["current"] == 1
