"""`kdanomaly calibrate` and `kdanomaly inspect` end to end on the synthetic data, with the trained KDAnomaly."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdanomaly.cli import main
from kdanomaly.data import image_files
from tests.support import CATEGORY, IMAGE_SIZE, TrainedRun

TARGET_RATE = 0.2


@pytest.fixture(scope="module")
def held_out_normals(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """100 good images the model never saw (another seed of the same texture family)."""
    from kdanomaly.data.synthetic import generate_synthetic_dataset

    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("held_out"), CATEGORY, IMAGE_SIZE, n_train=100, n_test_good=1, n_test_per_defect=1,
        seed=1,
    )  # fmt: skip
    return image_files(root / "train" / "good")


@pytest.fixture(scope="module")
def calibrated(trained: TrainedRun, held_out_normals: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trained checkpoint calibrated on the first 50 held-out normals (written to a copy)."""
    out = tmp_path_factory.mktemp("calibrated") / "model.ckpt"
    listing = out.parent / "normals.txt"
    listing.write_text("\n".join(str(p) for p in held_out_normals[:50]))
    arguments = ["--false-review-rate", str(TARGET_RATE), "--workers", "0", "--no-progress", "--out", str(out)]
    assert main(["calibrate", "--model", str(trained.checkpoint), "--normal", str(listing), *arguments]) == 0
    return torch.load(out, weights_only=False)["kdanomaly_calibration"] | {"checkpoint": out}


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    whole = (folder / "whole.png").resolve()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(whole)
    data = bytearray(whole.read_bytes())
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    (folder / "corrupt.png").write_bytes(bytes(data))
    whole.unlink()
    return sorted(folder.iterdir())


def _odd_formats(folder: Path, source: Path) -> list[Path]:
    """One test image as 16-bit gray TIFF, large RGB JPEG and BMP: other sizes, depths and formats than training."""
    folder.mkdir()
    pixels = np.asarray(Image.open(source).convert("RGB"))
    gray = (pixels.mean(axis=2) * 257).astype(np.uint16)
    Image.fromarray(gray).save(folder / "gray16.tif")
    Image.fromarray(pixels).resize((300, 200)).save(folder / "wide.jpg")
    Image.fromarray(pixels).save(folder / "same.bmp")
    return sorted(folder.iterdir())


def _inspect(inputs: list[str], model: Path, out: Path, *extra: str) -> list[dict]:
    assert main(["inspect", *inputs, "--model", str(model), "--out", str(out), "--no-progress", *extra]) == 0
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_measured_false_review_rate_lies_in_the_reported_interval(calibrated: dict, held_out_normals: list[Path]):
    assert calibrated["normal_images"] == 50 and calibrated["target_rate"] == TARGET_RATE
    assert calibrated["expected_rate"] <= TARGET_RATE
    out = calibrated["checkpoint"].parent / "run_normals"
    rows = _inspect([str(p) for p in held_out_normals[50:]], calibrated["checkpoint"], out, "--workers", "0")
    reviewed = sum(row["decision"] == "review" for row in rows)
    low, high = calibrated["interval"]
    assert low <= reviewed / len(rows) <= high, (reviewed, calibrated)


def test_inspect_flags_every_defect_the_model_scores_above_threshold_and_keeps_bad_files(
    trained: TrainedRun, calibrated: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    from tests.support import synthetic_datamodule

    datamodule = synthetic_datamodule(synthetic_root)
    datamodule.setup()
    model = trained.model.eval()
    threshold = calibrated["threshold"]
    direct = {}
    with torch.no_grad():
        for item in datamodule.test_data:
            score = model.model(model.pre_processor.transform(item.image[None])).pred_score
            direct[str(Path(item.image_path).resolve())] = float(score)
    bad = _bad_files(tmp_path / "bad")
    odd = _odd_formats(tmp_path / "odd", next(iter(image_files(synthetic_root / CATEGORY / "test" / "scratch"))))
    test_folder = synthetic_root / CATEGORY / "test"
    (tmp_path / "listed.txt").write_text("gone.png\n")  # listed but missing on disk
    bad.append(tmp_path / "gone.png")
    inputs = [str(test_folder), str(tmp_path / "bad"), str(tmp_path / "odd" / "*"), str(tmp_path / "listed.txt")]
    rows = _inspect(inputs, calibrated["checkpoint"], tmp_path / "run", "--batch-size", "4")
    by_key = {row["key"]: row for row in rows}
    assert len(rows) == len(direct) + len(bad) + len(odd) == len(by_key)
    for key, score in direct.items():
        assert by_key[key]["score"] == pytest.approx(score, rel=1e-3, abs=1e-3)
        if "/good/" not in key and score > threshold + 1e-3:
            assert by_key[key]["decision"] == "review"
            assert by_key[key]["regions"], key  # a reviewed image shows where
    assert sum(by_key[key]["decision"] == "review" for key in direct if "/good/" not in key) >= 15  # of 20 defects
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["status"] == "error"}
    assert sorted(errors) == sorted(p.name for p in bad) and "truncated" in errors["truncated.png"]
    assert "No such file" in errors["gone.png"] and "cannot identify" in errors["empty.png"]
    assert {Path(r["path"]).name: (r["width"], r["height"]) for r in rows if "/odd/" in r["path"]} == {
        "gray16.tif": (IMAGE_SIZE, IMAGE_SIZE), "same.bmp": (IMAGE_SIZE, IMAGE_SIZE), "wide.jpg": (300, 200),
    }  # fmt: skip
    scores = [row["score"] for row in rows if row["status"] == "ok"]
    assert scores == sorted(scores, reverse=True) and rows[-1]["status"] == "error"
    with (tmp_path / "run" / "results.csv").open() as file:
        table = list(csv.DictReader(file))
    assert [row["path"] for row in table] == [row["path"] for row in rows]
    for row in rows:
        for kind in ("overlay", "thumbnail", "map") if row["status"] == "ok" else ():
            assert (tmp_path / "run" / row[kind]).is_file()
    wide = next(row for row in rows if row["path"].endswith("wide.jpg"))
    assert np.load(tmp_path / "run" / wide["map"]).shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert all(0 <= r["box"][0] < r["box"][2] <= 300 and 0 <= r["box"][1] < r["box"][3] <= 200 for r in wide["regions"])


def test_second_run_gives_the_same_scores_and_an_existing_run_is_not_overwritten(
    calibrated: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    inputs = [str(synthetic_root / CATEGORY / "test" / "good"), str(synthetic_root / CATEGORY / "test" / "crack")]
    first = _inspect(inputs, calibrated["checkpoint"], tmp_path / "first")
    second = _inspect(inputs, calibrated["checkpoint"], tmp_path / "second")
    assert [(r["path"], r["score"]) for r in first] == [(r["path"], r["score"]) for r in second]
    before = (tmp_path / "first" / "results.jsonl").read_bytes()
    with pytest.raises(SystemExit, match="pass --resume"):
        _inspect(inputs, calibrated["checkpoint"], tmp_path / "first")
    assert (tmp_path / "first" / "results.jsonl").read_bytes() == before


def test_uncalibrated_model_needs_a_threshold(trained: TrainedRun, synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no calibrated threshold"):
        _inspect([str(synthetic_root / CATEGORY / "test" / "good")], trained.checkpoint, tmp_path / "run")
    rows = _inspect([str(synthetic_root / CATEGORY / "test" / "good")], trained.checkpoint, tmp_path / "given",
                    "--threshold", "1e9")  # fmt: skip
    assert {row["decision"] for row in rows} == {"pass"}


def test_resume_after_a_kill_scores_every_image_exactly_once(calibrated: dict, synthetic_root: Path, tmp_path: Path):
    source = image_files(synthetic_root / CATEGORY / "test")
    folder = tmp_path / "line"
    folder.mkdir()
    for copy in range(5):
        for path in source:
            shutil.copy(path, folder / f"{copy}_{path.parent.name}_{path.name}")
    inputs = image_files(folder)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kdanomaly.cli", "inspect", str(folder), "--model", str(calibrated["checkpoint"]),
               "--out", str(out), "--batch-size", "2", "--workers", "0", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 6:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    before = [json.loads(line) for line in journal.read_text().splitlines()]
    assert process.returncode == -signal.SIGKILL and 6 <= len(before) < len(inputs)
    with journal.open("a") as file:
        file.write('{"key": "torn')  # as if killed in the middle of a line
    rows = _inspect([str(folder)], calibrated["checkpoint"], out, "--resume", "--batch-size", "2")
    assert sorted(row["key"] for row in rows) == sorted(str(p.resolve()) for p in inputs)
    after = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(after) == len(inputs) and after[: len(before)] == before  # nothing scored twice, nothing lost


def test_two_processes_share_the_inputs_and_rank_0_writes_every_row_once(
    calibrated: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    inputs = [str(synthetic_root / CATEGORY / "test")]
    single = {row["key"]: row for row in _inspect(inputs, calibrated["checkpoint"], tmp_path / "one", "--workers", "0")}
    out = tmp_path / "sharded"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "kdanomaly.cli", "inspect", *inputs, "--model", str(calibrated["checkpoint"]), "--out", str(out),
               "--workers", "0", "--no-progress"]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == sorted(single)  # every input once: none lost, none twice
    shares = [[json.loads(line)["key"] for line in (out / f"journal-rank{r}.jsonl").open()] for r in (0, 1)]
    assert abs(len(shares[0]) - len(shares[1])) <= 1 and not set(shares[0]) & set(shares[1])
    for row in rows:
        assert row["score"] == pytest.approx(single[row["key"]]["score"], rel=1e-4)
        assert row["decision"] == single[row["key"]]["decision"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "pass --resume" in again.stderr  # rank 0's refusal stops every process
    assert sorted(out.glob("journal*")) == [out / "journal-rank0.jsonl", out / "journal-rank1.jsonl"]


def test_report_opens_from_disk_in_headless_chromium(calibrated: dict, synthetic_root: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (make test installs Debian's chromium)")
    rows = _inspect([str(synthetic_root / CATEGORY / "test")], calibrated["checkpoint"], tmp_path / "run")
    page = (tmp_path / "run" / "report.html").as_uri()
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
        "--allow-file-access-from-files", "--virtual-time-budget=5000",
    ]  # fmt: skip
    dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180)
    assert dom.stdout.count("data-row=") == len(rows), dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr
    screenshot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", "--window-size=1200,1600", page], timeout=180,
                   capture_output=True, check=True)  # fmt: skip
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # a drawn page, not a blank one


def _defect_crops(synthetic_root: Path, out: Path) -> None:
    """Each synthetic test defect cut out around its ground-truth mask, one folder per type."""
    for mask_path in image_files(synthetic_root / CATEGORY / "ground_truth"):
        kind = mask_path.parent.name
        rows, columns = np.nonzero(np.asarray(Image.open(mask_path)))
        image = Image.open(synthetic_root / CATEGORY / "test" / kind / mask_path.name.replace("_mask", ""))
        box = (max(columns.min() - 8, 0), max(rows.min() - 8, 0), columns.max() + 9, rows.max() + 9)
        (out / kind).mkdir(parents=True, exist_ok=True)
        image.crop(box).save(out / kind / mask_path.name.replace("_mask", ""))


def test_regions_are_named_by_the_recognizer_and_its_memory(
    calibrated: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    from kdanomaly.memory import PrototypeMemory

    _defect_crops(synthetic_root, tmp_path / "types")
    recognizer, memory = tmp_path / "recognizer.ckpt", tmp_path / "types.kdm"
    size = ["--size", "64"]
    main(["fewshot", "train", "--data.root", str(tmp_path / "types"), "--data.size", "64", "--trainer.max_epochs", "1",
          "--out", str(recognizer)])  # fmt: skip
    main(["fewshot", "enroll", "--model", str(recognizer), "--data", str(tmp_path / "types"), "--memory", str(memory),
          *size])  # fmt: skip
    naming = ["--recognizer", str(recognizer), "--memory", str(memory), "--recognizer-size", "64"]
    defects = [str(synthetic_root / CATEGORY / "test" / kind) for kind in ("scratch", "spot")]
    rows = _inspect(defects, calibrated["checkpoint"], tmp_path / "run", *naming)
    regions = [region for row in rows for region in row["regions"]]
    assert regions and {region["type"] for region in regions} <= {
        "contamination",
        "crack",
        "scratch",
        "spot",
        "unknown",
    }
    assert all(-1 <= region["similarity"] <= 1 for region in regions)
    with (tmp_path / "run" / "results.csv").open() as file:
        assert all(row["types"] for row in csv.DictReader(file) if row["decision"] == "review")
    assert "<table id='types'>" in (tmp_path / "run" / "report.html").read_text()
    with pytest.raises(SystemExit, match="both a recognizer checkpoint and its prototype memory"):
        _inspect(defects, calibrated["checkpoint"], tmp_path / "half", "--memory", str(memory))
    PrototypeMemory(16).save(tmp_path / "foreign.kdm")
    foreign = ["--recognizer", str(recognizer), "--memory", str(tmp_path / "foreign.kdm")]
    with pytest.raises(SystemExit, match="16-d embeddings"):
        _inspect(defects, calibrated["checkpoint"], tmp_path / "foreign", *foreign)
