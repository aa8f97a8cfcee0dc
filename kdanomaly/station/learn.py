"""``kdanomaly learn``: a reviewed run's verdicts into a new station version, without a gradient step.

False alarms join the normal images: the positional memory and the fusion statistics are built again, as ``fit``
builds them, from the training images and every false alarm confirmed so far (so the same appearance is normal
next time), and the threshold is calibrated again on the station's held-out good images; confirmed defects are
embedded (the teacher, :class:`TeacherEmbedder`) and enrolled under their type in the defect-type memory. The new
version is written beside the old ones, which stay untouched; :func:`undo` makes the previous one current again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdanomaly.engines.graph import ScoringGraph, load_scoring_graph
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


def _results_by_key(run: Path) -> dict[str, dict]:
    """The rows of ``run``'s ``results.jsonl`` by image key; StationError for a folder without one."""
    results = run / "results.jsonl"
    if not results.is_file():
        raise StationError(f"{run} is not an inspection run (no results.jsonl)")
    return {row["key"]: row for row in map(json.loads, results.read_text().splitlines())}


def collect_feedback(runs: Sequence[Path], station: Station) -> Feedback:
    """The decisions of ``runs`` not learnt before (skips are not learnt)."""
    feedback, seen = Feedback(), learnt_before(station)
    for run in runs:
        rows = _results_by_key(run)
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
    held = held_false_alarms(station, parent)
    false_alarms = held + [str(path) for path in feedback.false_alarms if str(path) not in held]
    parent_checkpoint = station.path(parent.checkpoint)
    checkpoint = _with_normal_images(parent_checkpoint, held != false_alarms, false_alarms, station, folder)
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
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), false_alarms=false_alarms,
    )  # fmt: skip
    station.versions.append(version)
    station.current = number
    station.save()
    if progress:
        normal = len(station.training_images) + len(false_alarms)
        print(
            f"station {root} version {number}: {len(feedback.false_alarms)} false alarms learnt (the memory holds"
            f" {normal} normal images), {len(feedback.defects)} defects enrolled; {calibration.describe()}"
        )
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


def held_false_alarms(station: Station, version: Version) -> list[str]:
    """The false alarms ``version``'s normal memory holds, oldest first; for a version written before they were
    listed, read from the decisions it learnt."""
    if version.false_alarms is not None:
        return version.false_alarms
    held = [] if version.parent is None else list(held_false_alarms(station, station.version(version.parent)))
    for source in version.learnt_from:
        run = Path(str(source["run"]))
        try:
            rows = _results_by_key(run)
        except (OSError, StationError) as error:
            msg = f"version {version.number} learnt from {run}, which can no longer be read: {error}"
            raise StationError(msg) from None
        decisions = read_decisions(run)
        held += [rows[key]["path"] for key in source["keys"] if decisions[key].decision == "false_alarm"]
    return held


def _read(paths: Sequence[Path], image_size: int, what: str) -> list[LoadedImage]:
    """``paths`` decoded as ``inspect`` does; an unreadable one is an error naming ``what`` they are."""
    try:
        return read_images(paths, (image_size, image_size))
    except ValueError as error:
        raise StationError(f"{what} are no longer readable: {error}") from None


def _normalised(paths: Sequence[str], image_size: int, what: str, graph: ScoringGraph) -> torch.Tensor:
    """The model's normalised input ``(N, 3, S, S)`` of ``paths`` read as ``inspect`` reads them."""
    views = torch.from_numpy(model_views(_read([Path(path) for path in paths], image_size, what)))
    return (views - graph.mean) / graph.std


def _with_normal_images(
    checkpoint: Path, changed: bool, false_alarms: list[str], station: Station, folder: Path
) -> Path:  # fmt: skip
    """A copy of ``checkpoint`` in ``folder``; when the false alarms ``changed``, its positional memory and fusion
    statistics are built again from the training images and ``false_alarms``, in batches of 16, as ``fit`` does."""
    from kdanomaly.models.kdad.positional_memory import PositionalMemory

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if changed:
        graph, _ = load_scoring_graph(checkpoint)
        if not isinstance(graph.model.memory, PositionalMemory):
            raise StationError("learning false alarms needs the positional memory (the station's default)")
        groups = [(station.training_images, "the station's training images"), (false_alarms, "false alarms")]
        graph.model.build_memory(
            _normalised(paths[start : start + 16], station.image_size, what, graph)
            for paths, what in groups
            for start in range(0, len(paths), 16)
        )
        memory_state = {
            f"model.{name}": value
            for name, value in graph.model.state_dict().items()
            if name.startswith(("memory.", "map_statistics."))
        }
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
    loaded = _read([path for path, _, _ in defects], station.image_size, "reviewed images")
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
