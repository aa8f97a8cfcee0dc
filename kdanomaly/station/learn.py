"""``kdanomaly learn``: a reviewed run's verdicts into a new station version, without a gradient step.

False alarms' teacher patches join the positional normal memory (so the same appearance is normal next time) and
the threshold is calibrated again on the station's held-out good images; confirmed defects are embedded (the
teacher, :class:`TeacherEmbedder`) and enrolled under their type in the defect-type memory. The new version is
written beside the old ones, which stay untouched; :func:`undo` makes the previous one current again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdanomaly.engines.graph import load_scoring_graph
from kdanomaly.engines.runtime import TorchEngine
from kdanomaly.inspection.calibration import store_calibration
from kdanomaly.inspection.scoring import LoadedImage, model_views, read_images
from kdanomaly.review.decisions import read_decisions

from .defect_types import CROP_SIZE, TeacherEmbedder
from .fit import FitOptions, export_for_inspection, held_out_calibration
from .record import Station, StationError, Version, relative


@dataclass
class Feedback:
    """What the reviews of some runs teach: false-alarm images and confirmed defects (image, type, boxes)."""

    false_alarms: list[Path] = field(default_factory=list)
    defects: list[tuple[Path, str, list[tuple[int, int, int, int]]]] = field(default_factory=list)
    sources: list[dict[str, object]] = field(default_factory=list)


def learnt_before(station: Station) -> set[tuple[str, str]]:
    """(run, image key) pairs the current version and its ancestors already learnt from."""
    seen: set[tuple[str, str]] = set()
    number: int | None = station.current
    while number is not None:
        version = station.version(number)
        for source in version.learnt_from:
            seen |= {(str(source["run"]), str(key)) for key in source["keys"]}
        number = version.parent
    return seen


def collect_feedback(runs: Sequence[Path], station: Station) -> Feedback:
    """The decisions of ``runs`` not learnt before (skips are not learnt)."""
    feedback, seen = Feedback(), learnt_before(station)
    for run in runs:
        results = run / "results.jsonl"
        if not results.is_file():
            raise StationError(f"{run} is not an inspection run (no results.jsonl)")
        rows = {row["key"]: row for row in map(json.loads, results.read_text().splitlines())}
        run_name, keys, counts = str(run.resolve()), [], {"false_alarms": 0, "defects": 0}
        for key, decision in read_decisions(run).items():
            if decision.decision == "skip" or (run_name, key) in seen or key not in rows:
                continue
            row = rows[key]
            keys.append(key)
            if decision.decision == "false_alarm":
                feedback.false_alarms.append(Path(row["path"]))
                counts["false_alarms"] += 1
            else:
                boxes = [tuple(region["box"]) for region in row.get("regions", [])]
                feedback.defects.append((Path(row["path"]), str(decision.type), boxes))
                counts["defects"] += 1
        if keys:
            feedback.sources.append({"run": run_name, "keys": keys, **counts})
    return feedback


def learn(runs: Sequence[Path], root: Path, progress: bool = True) -> Version:
    """A new current version of the station ``root`` that has learnt the reviews of ``runs``."""
    station = Station.load(root)
    feedback = collect_feedback(runs, station)
    if not feedback.sources:
        raise StationError(f"nothing to learn: no new false-alarm or defect decision in {[str(r) for r in runs]}")
    parent = station.version()
    number = max(version.number for version in station.versions) + 1
    folder = root / f"v{number}"
    shutil.rmtree(folder, ignore_errors=True)  # a learn killed before it listed this version
    folder.mkdir()
    checkpoint = _with_false_alarms(station.path(parent.checkpoint), feedback.false_alarms, station, folder)
    scoring = FitOptions(workers=0, progress=False)
    calibration = held_out_calibration(checkpoint, station.calibration_images, station.false_review_rate, scoring)
    store_calibration(checkpoint, calibration)
    types = _enrolled(station, parent, checkpoint, feedback.defects, folder)
    exported = parent.model != parent.checkpoint
    model = export_for_inspection(checkpoint, folder / "export") if exported else checkpoint
    version = Version(
        number, relative(checkpoint, root), relative(model, root), calibration.threshold,
        defect_types=relative(types, root) if types else parent.defect_types, parent=parent.number,
        learnt_from=feedback.sources,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )  # fmt: skip
    station.versions.append(version)
    station.current = number
    station.save()
    if progress:
        print(f"station {root} version {number}: {len(feedback.false_alarms)} false alarms added to the normal memory,"
              f" {len(feedback.defects)} defects enrolled; {calibration.describe()}")  # fmt: skip
    return version


def undo(root: Path) -> Version:
    """Make the current version's parent current again (nothing is deleted); that version."""
    station = Station.load(root)
    parent = station.version().parent
    if parent is None:
        raise StationError(f"{root} is at its first version: nothing to undo")
    station.current = parent
    station.save()
    return station.version()


def _reviewed(paths: Sequence[Path], image_size: int) -> list[LoadedImage]:
    """``paths`` decoded as ``inspect`` does; an unreadable one is an error (a reviewed image should be at hand)."""
    try:
        return read_images(paths, (image_size, image_size))
    except ValueError as error:
        raise StationError(f"reviewed images are no longer readable: {error}") from None


def _with_false_alarms(checkpoint: Path, false_alarms: list[Path], station: Station, folder: Path) -> Path:
    """A copy of ``checkpoint`` in ``folder`` whose positional memory also holds the ``false_alarms``' patches."""
    from kdanomaly.models.kdad.positional_memory import PositionalMemory, memory_features

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if false_alarms:
        graph, _ = load_scoring_graph(checkpoint)
        if not isinstance(graph.model.memory, PositionalMemory):
            raise StationError("learning false alarms needs the positional memory (the station's default)")
        images = torch.from_numpy(model_views(_reviewed(false_alarms, station.image_size)))
        with torch.no_grad():
            teacher = graph.model.network("teacher")((images - graph.mean) / graph.std)
            graph.model.memory.add(memory_features(teacher, graph.model.memory_layers))
        memory_state = {f"model.memory.{name}": value for name, value in graph.model.memory.state_dict().items()}
        state["state_dict"].update(memory_state)
    torch.save(state, folder / "model.ckpt")
    return folder / "model.ckpt"


def _torch_engine(checkpoint: Path) -> TorchEngine:
    """``checkpoint``'s scoring graph on PyTorch (batches of 16)."""
    graph, size = load_scoring_graph(checkpoint)
    return TorchEngine(graph, size, batch_size=16)


def _enrolled(
    station: Station, parent: Version, checkpoint: Path,
    defects: list[tuple[Path, str, list[tuple[int, int, int, int]]]], folder: Path,
) -> Path | None:  # fmt: skip
    """The parent's defect-type memory plus the ``defects``' region crops, in ``folder/types.kdm``; None when
    there is nothing to enrol. An image confirmed as a defect with no region is enrolled whole."""
    from kdanomaly.inspection.naming import DefectNamer
    from kdanomaly.memory import PrototypeMemory

    if not defects:
        return None
    embedder = TeacherEmbedder(checkpoint)
    memory = (
        PrototypeMemory.load(station.path(parent.defect_types))
        if parent.defect_types
        else PrototypeMemory(embedder.embedding_dim)
    )
    namer = DefectNamer(embedder, memory, CROP_SIZE)
    loaded = _reviewed([path for path, _, _ in defects], station.image_size)
    _, maps = _torch_engine(checkpoint)(model_views(loaded))
    embeddings, labels, metadata = [], [], []
    for item, anomaly_map, (path, kind, boxes) in zip(loaded, maps, defects, strict=True):
        assert item.display is not None  # readable
        regions = boxes or [(0, 0, item.size[0], item.size[1])]
        embeddings.append(namer.embed(item.display, item.size, regions, anomaly_map))
        labels += [kind] * len(regions)
        metadata += [{"image": str(path)}] * len(regions)
    memory.add(torch.cat(embeddings), labels, metadata)
    memory.save(folder / "types.kdm")
    return folder / "types.kdm"
