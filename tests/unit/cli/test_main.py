"""The kdanomaly command's own checks, before any training: an empty data root, the benchmark options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import CATEGORY


def test_data_root_without_images_is_rejected(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    from kdanomaly.cli import main

    (tmp_path / CATEGORY / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        main(["fit", "--model", "KDAnomaly", "--data", "MVTecAD", "--data.root", str(tmp_path)])
    with pytest.raises(RuntimeError, match="Found 0 images"):  # Anomalib's own check, for the Python API
        MVTecAD(root=tmp_path, category=CATEGORY, num_workers=0).setup()


def test_benchmark_command_shows_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from kdanomaly.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--help"])
    assert exit_info.value.code == 0
    assert "--profile" in capsys.readouterr().out
