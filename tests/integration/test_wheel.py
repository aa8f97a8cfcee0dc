"""The built wheel stands on its own: installed in a fresh venv outside the checkout, its commands run from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*command: object, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``command``; its stdout and stderr together, after checking it succeeded."""
    finished = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from a copy of the package sources, nothing else of the checkout.

    The dependencies come from this test's venv through a ``.pth`` line: its site-packages joins ``sys.path``, but
    its own ``.pth`` files (the editable install of the checkout) are not run, so ``kdanomaly`` is the wheel's.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO / "kdanomaly", source / "kdanomaly", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", source, cwd=work)
    environment = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", environment, cwd=work)
    python = environment / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work).strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((work / "dist").glob("kdanomaly-*.whl"))
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel, cwd=work)
    return environment


def test_the_wheel_is_what_runs_outside_the_checkout(venv: Path) -> None:
    where = _run(venv / "bin" / "python", "-c", "import kdanomaly; print(kdanomaly.__file__)", cwd=venv.parent)
    assert Path(where.strip()).is_relative_to(venv)
    assert (Path(where.strip()).parent / "review" / "page.html").is_file()  # package data: the review page


def test_help_and_benchmark_help_from_the_wheel_print_no_third_party_noise(venv: Path) -> None:
    command = venv / "bin" / "kdanomaly"
    main_help = _run(command, "--help", cwd=venv.parent)
    assert "benchmark" in main_help and "Warning" not in main_help and " INFO " not in main_help
    benchmark_help = _run(command, "benchmark", "--help", cwd=venv.parent)
    assert "--datasets" in benchmark_help and "Warning" not in benchmark_help


def test_demo_from_the_wheel(venv: Path) -> None:
    out = venv.parent / "demo"
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # the packaged backbone weights, as on a machine without a hub
    printed = _run(
        venv / "bin" / "kdanomaly",
        "demo",
        "--out",
        out,
        "--image-size",
        "64",
        "--epochs",
        "1",
        cwd=venv.parent,
        env=env,
    )
    assert "image AUROC" in printed and list(out.rglob("model.ckpt"))
