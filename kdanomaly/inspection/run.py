"""``inspect``: score, locate and (with a memory) name defects in image files, into a resumable run folder."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from tqdm import tqdm

from kdanomaly.engines.opening import OpenedModel, open_model
from kdanomaly.files import sha256_of

from .calibration import Calibration
from .journal import Row, RunFolder, journal_name
from .naming import DefectNamer
from .outputs import image_key, write_outputs
from .regions import find_regions
from .report import write_report
from .results import ranked, write_results
from .scoring import AnomalyScorer, ScoredBatch
from .sharding import Shard, coordinated

WRITES_IN_FLIGHT = 2  # batches whose files may still be being written while the next one is scored


@dataclass(frozen=True)
class InspectOptions:
    """Engine, batching and output limits of a run (``engine``, ``precision``: see :func:`open_model`)."""

    batch_size: int = 16
    workers: int = 2
    max_regions: int = 20
    recognizer_size: int = 128
    progress: bool = True
    engine: str = "auto"
    precision: str | None = None
    threads: int = 0

    def open(self, model: Path, device: str = "cpu") -> OpenedModel:
        """``model`` on this run's engine, precision, batch size and threads."""
        return open_model(model, self.engine, self.precision, self.batch_size, self.threads, device)


def review_threshold(model: OpenedModel, threshold: float | None) -> tuple[float, Calibration | None]:
    """``threshold`` if given, else the one ``kdanomaly calibrate`` stored with the model; and that calibration."""
    calibration = model.calibration
    if threshold is not None:
        return threshold, calibration
    if calibration is None:
        raise ValueError(
            f"{model.source} has no calibrated threshold: run `kdanomaly calibrate --model {model.source} --normal ...`"
            " on held-out good images, or pass --threshold"
        )
    return calibration.threshold, calibration


def _batch_rows(
    batch: ScoredBatch, threshold: float, namer: DefectNamer | None, options: InspectOptions
) -> list[tuple[Row, tuple | None]]:
    """Rows of a scored batch, each with the arguments of its files (see write_outputs), None for errors."""
    results: list[tuple[Row, tuple | None]] = []
    scores, maps = iter(batch.scores), iter(batch.maps)
    for item in batch.items:
        row: Row = {"key": image_key(item.path), "path": str(item.path)}
        if item.error is not None:
            results.append((row | {"status": "error", "error": item.error}, None))
            continue
        score, anomaly_map = float(next(scores)), next(maps)
        regions = find_regions(anomaly_map, threshold, item.size, options.max_regions) if score > threshold else []
        if namer is not None:
            regions = namer.name(cast(np.ndarray, item.display), item.size, regions, anomaly_map)  # readable
        row |= {
            "status": "ok", "score": score, "decision": "review" if score > threshold else "pass",
            "width": item.size[0], "height": item.size[1], "regions": [region.as_row() for region in regions],
        }  # fmt: skip
        results.append((row, (item.display, anomaly_map, threshold, regions, item.size)))
    return results


def _write_batch(run: RunFolder, rows: list[tuple[Row, tuple | None]]) -> None:
    """Files first, then the journal rows that point to them."""
    finished = []
    for row, files in rows:
        if files is not None:
            row |= write_outputs(run.out, Path(row["path"]), *files)
        finished.append(row)
    run.append(finished)


def _naming(
    recognizer: Path | None, memory: Path | None, station: Path | None, options: InspectOptions
) -> tuple[DefectNamer | None, dict[str, object], Path | None]:
    """The defect namer, the run settings recording it, and the station's model (``station``: its current version's
    model and defect types; otherwise a recognizer and its memory, or no naming)."""
    if (recognizer is None) != (memory is None):
        raise ValueError("defect types need both a recognizer checkpoint and its prototype memory")
    if station is not None:
        if recognizer is not None:
            raise ValueError("a station names defects with its own types: drop --recognizer/--memory")
        from kdanomaly.station.defect_types import station_setup

        return station_setup(station, options.recognizer_size)
    if recognizer is None or memory is None:
        return None, {}, None
    settings: dict[str, object] = {"recognizer_sha256": sha256_of(recognizer), "memory_sha256": sha256_of(memory)}
    namer = DefectNamer.from_recognizer(recognizer, memory, options.recognizer_size)
    return namer, settings | {"recognizer_size": options.recognizer_size}, None


def inspect(
    inputs: Sequence[Path], model: Path | None, out: Path, threshold: float | None = None,
    recognizer: Path | None = None, memory: Path | None = None, resume: bool = False,
    options: InspectOptions | None = None, station: Path | None = None,
) -> list[Row]:  # fmt: skip
    """Inspect ``inputs`` with ``model`` (a checkpoint or an export) or a ``station``'s current model into the run
    folder ``out``; the ranked rows (also in results.csv/.jsonl, report.html).

    Launched as several processes (torchrun, srun), each scores its share and rank 0 returns and writes every row
    once all have finished; the others return no rows.
    """
    options = options or InspectOptions()
    namer, settings, station_model = _naming(recognizer, memory, station, options)
    if (model is None) == (station_model is None):
        raise ValueError("give either a model (--model) or a station (--station)")
    model = cast(Path, model or station_model)
    with coordinated() as coordinator:
        shard = coordinator.shard
        opened = options.open(model, str(shard.device()))
        threshold, calibration = review_threshold(opened, threshold)
        settings |= opened.identity() | {"threshold": threshold, "max_regions": options.max_regions}
        scorer = AnomalyScorer(opened.engine)
        journal = journal_name(shard.rank, shard.world_size)
        run = coordinator.first_then_others(lambda: RunFolder(out, settings, resume or shard.rank > 0, journal))
        mine = shard.take(inputs)
        todo = [path for path in mine if image_key(path) not in run.done]
        _score_into(run, todo, len(mine), scorer, threshold, namer, options)
        coordinator.wait_for_all()
        if shard.rank > 0:
            return []
    rows = ranked(run.all_rows())
    write_results(out, rows)
    engine = f"{opened.engine.name}, {opened.engine.precision}"
    notes = [
        f"model {model} ({engine})",
        calibration.describe() if calibration else f"threshold {threshold:.6g} (given)",
    ]
    write_report(out, rows, threshold, notes)
    return rows


def _score_into(
    run: RunFolder, todo: list[Path], total: int, scorer: AnomalyScorer, threshold: float,
    namer: DefectNamer | None, options: InspectOptions,
) -> None:  # fmt: skip
    """Score ``todo`` (of ``total`` inputs) batch by batch; files and journal rows written by a writer thread."""
    pending: deque[Future] = deque()
    bar = tqdm(total=total, initial=total - len(todo), unit="img", disable=not options.progress)
    with ThreadPoolExecutor(max_workers=1) as writer, bar:
        for batch in scorer.batches(todo, options.batch_size, options.workers):
            pending.append(writer.submit(_write_batch, run, _batch_rows(batch, threshold, namer, options)))
            while len(pending) > WRITES_IN_FLIGHT:
                pending.popleft().result()
            bar.update(len(batch.items))
        for future in pending:
            future.result()


def normal_scores(model: Path, inputs: Sequence[Path], options: InspectOptions) -> tuple[np.ndarray, list[str]]:
    """Anomaly scores of readable ``inputs`` and the errors of the unreadable ones (for calibration)."""
    scorer = AnomalyScorer(options.open(model, str(Shard().device())).engine)
    scores, errors = [], []
    bar = tqdm(total=len(inputs), unit="img", disable=not options.progress, desc="scoring normal images")
    with bar:
        for batch in scorer.batches(inputs, options.batch_size, options.workers):
            scores.append(batch.scores)
            errors += [item.error for item in batch.items if item.error is not None]
            bar.update(len(batch.items))
    return np.concatenate(scores), errors
