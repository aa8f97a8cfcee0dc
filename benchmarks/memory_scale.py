"""PrototypeMemory at scale: an IVF-PQ memory built by separate processes in shards and merged, against flat.

    python -m benchmarks.memory_scale --out benchmarks/results/memory_scale.json

References are synthetic 128-d vectors from a mixture of 4 096 Gaussian clusters (labels: 16 types), made shard by
shard from seeded generators so no process holds more than its slice. For each size:

- ``ivfpq``: one memory trained on a 160 000-vector sample (4 096 lists, ``--pq-bytes`` per vector) and saved;
  ``--shards`` worker processes (``--workers`` at a time) each load it, add their slice and save; the shards are
  merged.
  Reported: train / shard / merge seconds, the merged file's size, ms per query (1 000 queries in one batch) and
  recall at 16, 64 and 256 probed lists.
- ``flat``: the exact answers, slice by slice (``faiss.knn``), which give the recall: ``recall@10`` is the fraction of
  queries whose true nearest reference is among the 10 returned, ``overlap@10`` the mean share of the true top 10
  among them. The flat memory's footprint is its vectors, ``N x 128 x 4`` bytes (computed, not a saved file).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import faiss
import numpy as np

from benchmarks.report import run_header
from kdanomaly.memory import PrototypeMemory

DIM, CLUSTERS, TYPES, QUERIES, K = 128, 4096, 16, 1000, 10
PROBES = (16, 64, 256)


def centres() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(CLUSTERS, DIM)).astype(np.float32)


def mixture(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` unit vectors of the cluster mixture and their cluster numbers, from generator ``seed``."""
    rng = np.random.default_rng(seed)
    which = rng.integers(CLUSTERS, size=count)
    vectors = centres()[which] + rng.standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), which


def shard_rows(size: int, shards: int) -> list[int]:
    return [len(part) for part in np.array_split(np.arange(size), shards)]


def build_shard(task: tuple[Path, int, int, Path]) -> float:
    """One worker process: load the trained memory, add slice ``number`` (``count`` vectors), save it; seconds."""
    template, number, count, out = task
    started = time.perf_counter()
    memory = PrototypeMemory.load(template)
    vectors, which = mixture(count, seed=1000 + number)
    memory.add(vectors, [f"type{c % TYPES}" for c in which])
    memory.save(out)
    return time.perf_counter() - started


def exact_neighbours(queries: np.ndarray, counts: list[int]) -> np.ndarray:
    """Global row numbers of each query's ``K`` nearest references (inner product), slice by slice."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    first = 0
    for number, count in enumerate(counts):
        scores, rows = faiss.knn(queries, mixture(count, seed=1000 + number)[0], K, metric=faiss.METRIC_INNER_PRODUCT)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_rows = np.concatenate([best_rows, rows + first], axis=1)
        order = np.argsort(-best_scores, axis=1)[:, :K]
        best_scores, best_rows = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)
        first += count
    return best_rows


def recall(found: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    nearest = np.mean([row[0] in hits for row, hits in zip(exact, found, strict=True)])
    overlap = np.mean([len(set(row) & set(hits)) / K for row, hits in zip(exact, found, strict=True)])
    return {f"recall@{K}": round(float(nearest), 4), f"overlap@{K}": round(float(overlap), 4)}


def scale_point(size: int, pq_bytes: int, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    """Build the sharded IVF-PQ memory of ``size`` references and measure it against the exact answers."""
    counts = shard_rows(size, args.shards)
    queries = mixture(QUERIES, seed=7)[0]
    started = time.perf_counter()
    template = PrototypeMemory(DIM, index="ivfpq", ivf_lists=args.lists, pq_bytes=pq_bytes, train_size=args.train)
    template.train(mixture(args.train, seed=3)[0])
    template.save(folder / "template.kdm")
    train_seconds = time.perf_counter() - started
    tasks = [(folder / "template.kdm", n, count, folder / f"shard{n}.kdm") for n, count in enumerate(counts)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        shard_seconds = pool.map(build_shard, tasks)
    shards_wall = time.perf_counter() - started
    started = time.perf_counter()
    memory = PrototypeMemory.merged([PrototypeMemory.load(task[3]) for task in tasks])
    memory.save(folder / "merged.kdm")
    merge_seconds = time.perf_counter() - started
    exact = exact_neighbours(queries, counts)
    searches = {}
    for probes in PROBES:
        memory.tune(ivf_probes=probes)
        started = time.perf_counter()
        found = memory.search(queries, K).ids
        milliseconds = (time.perf_counter() - started) / QUERIES * 1000
        searches[f"probes={probes}"] = {"ms_per_query": round(milliseconds, 3)} | recall(found, exact)
    return {
        "references": size, "pq_bytes": pq_bytes, "shards": args.shards, "train_seconds": round(train_seconds, 1),
        "shard_seconds": [round(s, 1) for s in shard_seconds], "shards_wall_seconds": round(shards_wall, 1),
        "merge_and_save_seconds": round(merge_seconds, 1),
        "ivfpq_file_bytes": (folder / "merged.kdm").stat().st_size, "flat_vector_bytes": size * DIM * 4,
        "search": searches,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="shard-building processes at a time")
    parser.add_argument("--pq-bytes", nargs="+", type=int, default=[16, 32, 64], help="bytes per reference")
    parser.add_argument("--lists", type=int, default=4096, help="inverted lists of the IVF-PQ memory")
    parser.add_argument("--train", type=int, default=160_000, help="training sample (39 per list)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = run_header(args) | {"points": []}
    for size in args.sizes:
        for pq_bytes in args.pq_bytes:
            with TemporaryDirectory() as folder:
                report["points"].append(scale_point(size, pq_bytes, args, Path(folder)))
            args.out.write_text(json.dumps(report, indent=2))
            print(json.dumps(report["points"][-1], indent=2), flush=True)


if __name__ == "__main__":
    main()
