"""A simulated reviewer closing the station loop: fit on a few good images, then inspect a stream in rounds, let the
ground truth decide the reviewed images, ``learn``, repeat.

    python -m benchmarks.station_loop --out benchmarks/results/station_loop.json \
        --dataset magnetic_tile:../shared/datasets/magnetic_tile --dataset screw:../shared/datasets/mvtec_ad/screw

Per dataset (seeded): ``--fit-images`` good images make the station (``kdanomaly fit``, its defaults but
``--false-review-rate``); the other good images and every defect image are shuffled into
``--rounds`` rounds. Round r is inspected with the station as it is after learning rounds 0..r-1; the reviewer
(the ground truth) marks every image sent to review as a false alarm or as a defect of its true type, and
``kdanomaly learn`` makes the next version. Reported per round, on that round's images: the share of good images
sent to review at the calibrated threshold and the share of defects caught; the false-review rate at the threshold
that keeps every defect in review and at 95 % defect recall; image AUROC; and the type accuracy of the reviewed
defects whose type was enrolled in an earlier round. Results are written after every round; a stopped run resumes
(fit, inspect and learn all pick up where they stopped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.report import run_header
from kdanomaly.data import image_files
from kdanomaly.inspection.outputs import image_key
from kdanomaly.inspection.run import InspectOptions, inspect
from kdanomaly.review.decisions import Decision, append_decision, read_decisions
from kdanomaly.station import Station
from kdanomaly.station.fit import FitOptions, fit_station
from kdanomaly.station.learn import learn, learnt_before


def labelled_images(name: str, root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Good images and (defect image, type) of ``magnetic_tile`` or an MVTec-layout category (e.g. screw)."""
    if name == "magnetic_tile":
        from kdanomaly.data.magnetic_tile import DEFECT_CLASSES, GOOD_CLASS

        good = sorted((root / f"MT_{GOOD_CLASS}" / "Imgs").glob("*.jpg"))
        defects = [
            (path, kind) for kind in DEFECT_CLASSES for path in sorted((root / f"MT_{kind}" / "Imgs").glob("*.jpg"))
        ]
        return good, defects
    good = image_files(root / "train" / "good") + image_files(root / "test" / "good")
    kinds = sorted(folder.name for folder in (root / "test").iterdir() if folder.is_dir() and folder.name != "good")
    return good, [(path, kind) for kind in kinds for path in image_files(root / "test" / kind)]


def rounds_of(good: list[Path], defects: list[tuple[Path, str]], fit_images: int, rounds: int, seed: int):
    """The fitting images and ``rounds`` lists of (path, type or None), each a seeded share of the stream."""
    rng = np.random.default_rng(seed)
    good = [good[i] for i in rng.permutation(len(good))]
    defects = [defects[i] for i in rng.permutation(len(defects))]
    stream: list[list[tuple[Path, str | None]]] = [[] for _ in range(rounds)]
    for index, path in enumerate(good[fit_images:]):
        stream[index % rounds].append((path, None))
    for index, (path, kind) in enumerate(defects):
        stream[index % rounds].append((path, kind))
    return good[:fit_images], stream


def round_metrics(rows: list[dict], truth: dict[str, str | None], known_types: set[str]) -> dict[str, Any]:
    """What one round's inspection shows against the ground truth (``truth``: image key → type, None = good)."""
    scored = [row for row in rows if row["status"] == "ok"]
    labels = np.array([truth[row["key"]] is not None for row in scored])
    scores = np.array([row["score"] for row in scored])
    reviewed = np.array([row["decision"] == "review" for row in scored])
    good_scores, defect_scores = scores[~labels], scores[labels]
    named = [
        (row["regions"][0].get("type"), truth[row["key"]])
        for row in scored
        if row["decision"] == "review" and truth[row["key"]] in known_types and row["regions"]
    ]
    return {
        "good_images": int((~labels).sum()), "defect_images": int(labels.sum()),
        "false_review_rate": round(float(reviewed[~labels].mean()), 4),
        "defect_recall": round(float(reviewed[labels].mean()), 4),
        "false_review_rate_all_defects_kept": round(float((good_scores >= defect_scores.min()).mean()), 4),
        "false_review_rate_at_95_recall": round(float((good_scores >= np.quantile(defect_scores, 0.05)).mean()), 4),
        "image_AUROC": round(float(roc_auc_score(labels, scores)), 4),
        "typed_defects": len(named),
        "type_accuracy": round(float(np.mean([p == t for p, t in named])), 4) if named else None,
    }  # fmt: skip


def run_dataset(name: str, root: Path, work: Path, args: argparse.Namespace, cells: dict[str, Any], save) -> None:
    good, defects = labelled_images(name, root)
    fitting, stream = rounds_of(good, defects, args.fit_images, args.rounds, args.seed)
    station_root = work / "station"
    if not (station_root / "station.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "fit_images.txt").write_text("".join(f"{path.resolve()}\n" for path in fitting))
        options = FitOptions(args.image_size, args.steps, args.false_review_rate, seed=args.seed, progress=False)
        fit_station([str(work / "fit_images.txt")], station_root, options)
    cells.setdefault("fit", {"good_images": len(fitting), "steps": args.steps, "image_size": args.image_size,
                             "false_review_rate": args.false_review_rate})  # fmt: skip
    rounds = cells.setdefault("rounds", [])
    known: set[str] = set()
    for number, images in enumerate(stream):
        truth = {image_key(path): kind for path, kind in images}
        run = work / f"round_{number}"
        if number >= len(rounds):
            station = Station.load(station_root)
            options = InspectOptions(progress=False)
            rows = inspect([path for path, _ in images], None, run, resume=run.exists(), options=options,
                           station=station_root)  # fmt: skip
            rounds.append({"version": station.current} | round_metrics(rows, truth, known))
            save()
        _review_and_learn(run, truth, station_root)
        known |= {kind for kind in truth.values() if kind is not None}
        rounds[number]["learnt_version"] = Station.load(station_root).current
        save()


def _review_and_learn(run: Path, truth: dict[str, str | None], station_root: Path) -> None:
    """The ground truth's verdict on every reviewed image of ``run``, then ``learn`` (once)."""
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    decided = read_decisions(run)
    for row in rows:
        if row.get("decision") == "review" and row["key"] not in decided:
            kind = truth[row["key"]]
            verdict = ("false_alarm", None) if kind is None else ("defect", kind)
            append_decision(run, Decision.new(row["key"], *verdict))
    station = Station.load(station_root)
    if not any(source[0] == str(run.resolve()) for source in learnt_before(station)):
        learn([run], station_root, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="NAME:ROOT (magnetic_tile, or MVTec)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("results/station_loop"), help="stations and runs")
    parser.add_argument("--fit-images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=FitOptions.steps)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--false-review-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report: dict[str, Any] = run_header(args) | {"datasets": {}}
    if args.out.exists():
        report["datasets"] = json.loads(args.out.read_text())["datasets"]
    for spec in args.dataset:
        name, root = spec.split(":", 1)
        cells = report["datasets"].setdefault(name, {})
        save = lambda: args.out.write_text(json.dumps(report, indent=2))  # noqa: E731
        run_dataset(name, Path(root), args.work / name, args, cells, save)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
