"""PrototypeMemory: matching rule, search, persistence, bad input; the pruned k-center coreset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kdanomaly.memory import UNKNOWN, MemoryFileError, PrototypeMemory, k_center_greedy


def _clusters(n_per_class: int = 20, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    vectors = np.concatenate([centre + 0.3 * rng.normal(size=(n_per_class, dim)) for centre in centres])
    return vectors.astype(np.float32), [name for name in "abc" for _ in range(n_per_class)]


def _unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_class_scores_match_a_brute_force_mean_of_cosine_similarities() -> None:
    vectors, labels = _clusters()
    memory = PrototypeMemory(16)
    memory.add(vectors, labels)
    queries = np.random.default_rng(1).normal(size=(7, 16))
    scores, classes = memory.class_scores(queries)
    assert classes == ["a", "b", "c"]
    for q, query in enumerate(queries):
        for c, name in enumerate(classes):
            refs = [v for v, label in zip(vectors, labels, strict=True) if label == name]
            cosines = [query @ r / np.linalg.norm(query) / np.linalg.norm(r) for r in refs]
            assert scores[q, c] == pytest.approx(np.mean(cosines), abs=1e-5)


def test_flat_search_is_exact_and_approximate_indexes_find_the_neighbours() -> None:
    rng = np.random.default_rng(2)
    references, queries = rng.normal(size=(3000, 32)), rng.normal(size=(50, 32))
    expected = np.argsort(-(_unit(queries) @ _unit(references).T), axis=1)[:, :5]
    flat = PrototypeMemory(32)
    flat.add(references, ["x"] * len(references))
    result = flat.search(queries, k=5)
    assert (result.ids == expected).all()
    assert result.similarities[:, 0] == pytest.approx((_unit(queries) * _unit(references)[expected[:, 0]]).sum(1))
    for kind in ("ivf", "hnsw"):
        approximate = PrototypeMemory(32, index=kind)
        approximate.add(references, ["x"] * len(references))
        recall = (approximate.search(queries, k=1).ids[:, 0] == expected[:, 0]).mean()
        assert recall >= 0.8, kind
        if kind == "ivf":  # probing every list is exhaustive
            approximate.tune(ivf_probes=len(references))
            assert (approximate.search(queries, k=5).ids == expected).all()


def test_predict_answers_unknown_below_the_calibrated_similarity_and_new_classes_need_no_training() -> None:
    vectors, labels = _clusters(n_per_class=30)
    memory = PrototypeMemory(16)
    memory.add(vectors[::2], labels[::2])
    held_out = vectors[1::2]
    assert memory.predict(held_out).labels == labels[1::2]
    threshold = memory.calibrate(held_out, false_unknown_rate=0.1)
    assert np.mean(memory.predict(held_out).similarities < threshold) <= 0.1
    assert memory.predict(-held_out[:3]).labels == [UNKNOWN] * 3  # opposite directions match nothing
    new_class = np.random.default_rng(5).normal(size=(1, 16)) + 0.05 * np.random.default_rng(6).normal(size=(4, 16))
    memory.add(new_class[:2], ["d", "d"])
    assert memory.predict(new_class[2:]).labels == ["d", "d"]
    assert memory.remove("d") == 2 and "d" not in memory.classes
    assert memory.remove("nothing") == 0


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip_gives_identical_results(tmp_path: Path, kind: str) -> None:
    vectors, labels = _clusters(n_per_class=200)
    memory = PrototypeMemory(16, index=kind, unknown_threshold=0.25)
    memory.add(vectors, labels, [{"image": f"{i}.png"} for i in range(len(labels))])
    queries = np.random.default_rng(3).normal(size=(20, 16))
    memory.save(tmp_path / "memory.kdm")
    loaded = PrototypeMemory.load(tmp_path / "memory.kdm")
    before, after = memory.search(queries, k=4), loaded.search(queries, k=4)
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.similarities, after.similarities)
    predicted, reloaded = memory.predict(queries), loaded.predict(queries)
    assert predicted.labels == reloaded.labels and UNKNOWN in predicted.labels
    assert np.array_equal(predicted.similarities, reloaded.similarities)
    assert loaded.metadata[5] == {"image": "5.png"} and loaded.unknown_threshold == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["memory.kdm"]  # no temporary file left behind


def test_corrupted_truncated_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    vectors, labels = _clusters()
    memory = PrototypeMemory(16)
    memory.add(vectors, labels)
    path = tmp_path / "memory.kdm"
    memory.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    (tmp_path / "corrupted").write_bytes(bytes(corrupted))
    (tmp_path / "foreign").write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    (tmp_path / "newer").write_bytes(data.replace(b"MEMORY\n\x02\x00", b"MEMORY\n\x03\x00", 1))
    for name, message in [("truncated", "truncated"), ("corrupted", "corrupted"), ("foreign", "not a kdanomaly"),
                          ("newer", "format version 3")]:  # fmt: skip
        with pytest.raises(MemoryFileError, match=message):
            PrototypeMemory.load(tmp_path / name)


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, labels = _clusters()
    memory = PrototypeMemory(16)
    memory.add(vectors[:10], labels[:10])
    path = tmp_path / "memory.kdm"
    memory.save(path)
    original = path.read_bytes()
    memory.add(vectors[10:], labels[10:])

    def interrupted(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        memory.save(path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["memory.kdm"]


def test_bad_input_is_rejected_with_clear_messages() -> None:
    memory = PrototypeMemory(4)
    with pytest.raises(RuntimeError, match="empty"):
        memory.search(np.ones((1, 4)))
    for bad, message in [
        (np.ones((2, 5)), r"shape \(N, 4\)"),
        (np.ones((2, 4), dtype=np.int64), "floating point"),
        (np.array([[1.0, np.nan, 0, 0]]), "NaN"),
        (np.zeros((1, 4)), "all-zero"),
    ]:
        with pytest.raises(ValueError, match=message):
            memory.add(bad, ["a"] * len(bad))
    with pytest.raises(ValueError, match="2 embeddings, 1 labels"):
        memory.add(np.ones((2, 4)), ["a"])
    with pytest.raises(ValueError, match="cannot be a label"):
        memory.add(np.ones((1, 4)), [UNKNOWN])
    with pytest.raises(ValueError, match="unknown index"):
        PrototypeMemory(4, index="annoy")  # type: ignore[arg-type]


def _plain_k_center(points: np.ndarray, size: int, start: int) -> list[int]:
    nearest, picks = np.full(len(points), np.inf), [start]
    for _ in range(size - 1):
        nearest = np.minimum(nearest, np.linalg.norm(points - points[picks[-1]], axis=1))
        picks.append(int(nearest.argmax()))
    return picks


@pytest.mark.parametrize("dim", [12, 100])  # 100: with the principal-subspace lower bound
def test_pruned_k_center_picks_what_the_plain_greedy_picks(dim: int) -> None:
    rng = np.random.default_rng(4)
    scales = np.geomspace(3, 0.1, dim)  # decaying spectrum, like CNN features
    points = rng.normal(size=(800, dim)) * scales + rng.normal(size=(4, dim))[rng.integers(4, size=800)]
    points = points.astype(np.float32)
    picks = k_center_greedy(torch.from_numpy(points), 60, start=7)
    assert picks.tolist() == _plain_k_center(points.astype(np.float64), 60, start=7)
    points = points[:, :12]
    memory = PrototypeMemory(12)
    chosen = memory.add_coreset(points, "normal", 25)
    assert len(memory) == 25 and len(set(chosen.tolist())) == 25
    with pytest.raises(ValueError, match="coreset size"):
        k_center_greedy(torch.from_numpy(points), 0)
    with pytest.raises(ValueError, match="NaN"):
        k_center_greedy(torch.tensor([[float("nan"), 0.0]]), 1)
