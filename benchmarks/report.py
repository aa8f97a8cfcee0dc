"""What every benchmark result file starts with: the machine and the settings of the run; resuming a result file."""

from __future__ import annotations

import argparse
import ast
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def machine() -> str:
    """CPU architecture, torch threads and torch version."""
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run_header(args: argparse.Namespace, **readable: object) -> dict[str, object]:
    """``machine`` and ``settings``: every command-line argument as text, or as given in ``readable``."""
    settings = {key: str(value) for key, value in vars(args).items()} | readable
    return {"machine": machine(), "settings": settings}


def continued_report(out: Path, fresh: dict, selections: Mapping[str, Sequence[str] | None]) -> dict:
    """The report in ``out`` if it was made with the settings of ``fresh`` (so the same draws follow), else an error.

    ``selections`` name the settings that choose which parts run (lists, stored as text); they may differ, and the
    continued report records the union of both runs', in the given order (None: the stored run's, then the new).
    """
    if not out.exists():
        return fresh
    stored = json.loads(out.read_text())
    differing = {
        key for key in (stored["settings"].keys() | fresh["settings"].keys()) - {"resume", "out", *selections}
        if stored["settings"].get(key) != fresh["settings"].get(key)
    }  # fmt: skip
    if differing:
        raise SystemExit(f"{out} was made with other settings ({sorted(differing)}); cannot resume it")
    united = {}
    for key, order in selections.items():
        ran = [*ast.literal_eval(stored["settings"][key]), *ast.literal_eval(fresh["settings"][key])]
        united[key] = str([value for value in (order or dict.fromkeys(ran)) if value in ran])
    return stored | {"settings": fresh["settings"] | united}
