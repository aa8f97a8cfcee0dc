"""Parts of `kdanomaly inspect`: conformal calibration, stored thresholds, regions, inputs, the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from kdanomaly.inspection.calibration import calibrate, read_calibration, store_calibration
from kdanomaly.inspection.inputs import collect_inputs
from kdanomaly.inspection.journal import JOURNAL_FILE, RunFolder, RunFolderError
from kdanomaly.inspection.regions import find_regions


def test_conformal_threshold_is_the_rank_statistic_and_keeps_its_promise() -> None:
    scores = np.arange(19.0)[::-1]
    calibration = calibrate(scores, target_rate=0.1)
    assert calibration.threshold == 17.0  # rank ceil(20 * 0.9) = 18 of 0..18
    assert calibration.expected_rate == pytest.approx(2 / 20)
    rng = np.random.default_rng(0)
    rates, covered = [], []
    for _ in range(3000):  # the false-review rate of a threshold from 50 normal scores, over many held-out sets
        found = calibrate(rng.standard_normal(50), target_rate=0.1, confidence=0.9)
        rate = norm.sf(found.threshold)
        rates.append(rate)
        covered.append(found.interval[0] <= rate <= found.interval[1])
    assert np.mean(rates) == pytest.approx(found.expected_rate, abs=0.004)
    assert np.mean(rates) <= 0.1 + 0.004
    assert np.mean(covered) == pytest.approx(0.9, abs=0.02)


def test_too_few_or_broken_normal_scores_are_refused() -> None:
    assert calibrate(np.arange(9.0), 0.1).threshold == 8.0
    with pytest.raises(ValueError, match="8 normal images cannot calibrate a 10 % false-review rate; it needs 9"):
        calibrate(np.arange(8.0), 0.1)
    with pytest.raises(ValueError, match="finite"):
        calibrate([1.0, math.nan] * 20, 0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        calibrate(np.arange(100.0), 1.5)


def test_calibration_is_written_into_the_checkpoint_atomically(tmp_path: Path) -> None:
    original = tmp_path / "model.ckpt"
    nan = torch.tensor(float("nan"))
    state = {"post_processor._image_threshold": nan, "post_processor._pixel_threshold": nan, "w": torch.ones(3)}
    torch.save({"state_dict": state}, original)
    before = original.read_bytes()
    calibration = calibrate(np.linspace(0, 1, 99), 0.05)
    copy = store_calibration(original, calibration, tmp_path / "calibrated.ckpt")
    assert original.read_bytes() == before  # --out leaves the given checkpoint alone
    stored = torch.load(copy, weights_only=False)
    assert read_calibration(stored) == calibration
    assert all(stored["state_dict"][key] == calibration.threshold for key in state if "threshold" in key)
    assert torch.equal(stored["state_dict"]["w"], torch.ones(3))
    store_calibration(original, calibration)
    assert read_calibration(torch.load(original, weights_only=False)) == calibration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.ckpt", "model.ckpt"]  # no temporary left


def test_regions_are_components_above_the_threshold_in_original_pixels() -> None:
    anomaly_map = np.zeros((16, 16), np.float32)
    anomaly_map[2:4, 3:7] = 5.0  # 2 x 4 block, peak 5
    anomaly_map[10:13, 10:11] = 9.0  # 3 x 1 block, peak 9
    anomaly_map[10, 11] = 0.5  # touches the second block but stays below the threshold
    regions = find_regions(anomaly_map, threshold=1.0, original_size=(64, 32))  # map grid scaled x4 in x, x2 in y
    assert [r.peak for r in regions] == [9.0, 5.0]
    assert regions[0].box == (40, 20, 44, 26) and regions[0].area == 3 * 8
    assert regions[1].box == (12, 4, 28, 8) and regions[1].area == 8 * 8
    assert find_regions(anomaly_map, threshold=9.0, original_size=(16, 16)) == []
    assert len(find_regions(anomaly_map, 1.0, (16, 16), max_regions=1)) == 1
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        find_regions(anomaly_map[None], 1.0, (16, 16))


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
