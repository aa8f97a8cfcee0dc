"""VectorStore: the unlabelled layer under every memory — search, coreset, removal, merging, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdanomaly.memory import MemoryFileError, PrototypeMemory, VectorStore


def _vectors(count: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)


def test_search_returns_rows_in_insertion_order_with_cosine_similarity() -> None:
    store = VectorStore(16)
    data = _vectors(40)
    store.add(data[:25])
    store.add(data[25:])
    similarities, rows = store.search(data[[3, 31]] * 7.0, k=2)  # scale does not change a cosine
    assert rows[:, 0].tolist() == [3, 31]
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-5)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    np.testing.assert_allclose(similarities[0, 1], unit[3] @ unit[rows[0, 1]], atol=1e-5)


def test_coreset_keeps_the_farthest_points_and_stores_only_them() -> None:
    store = VectorStore(2)
    cluster = np.array([[1.0, 0.0], [0.99, 0.01], [0.98, 0.02], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    chosen = store.add_coreset(cluster, size=3)
    assert len(store) == 3 and sorted(chosen.tolist()) in ([0, 3, 4], [1, 3, 4], [2, 3, 4])
    np.testing.assert_allclose(np.linalg.norm(store.embeddings, axis=1), 1.0, atol=1e-6)


def test_remove_drops_rows_and_renumbers_the_rest() -> None:
    store = VectorStore(16)
    data = _vectors(10)
    store.add(data)
    store.remove(np.arange(10) < 4)
    similarities, rows = store.search(data[[7]], k=1)
    assert len(store) == 6 and rows[0, 0] == 3 and similarities[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_merged_stores_search_like_one_store_built_at_once() -> None:
    data = _vectors(30)
    first, second, whole = VectorStore(16), VectorStore(16), VectorStore(16)
    first.add(data[:12])
    second.add(data[12:])
    whole.add(data)
    merged, offsets = VectorStore.merged([first, second])
    assert offsets == [0, 12]
    queries = _vectors(5, seed=1)
    np.testing.assert_array_equal(merged.search(queries, 3)[1], whole.search(queries, 3)[1])
    with pytest.raises(ValueError, match="other settings"):
        VectorStore.merged([first, VectorStore(16, index="hnsw")])


def test_file_round_trip_and_a_prototype_memory_file_read_as_its_store(tmp_path: Path) -> None:
    store = VectorStore(16, index="hnsw")
    store.add(_vectors(50))
    store.save(tmp_path / "store.bin")
    loaded = VectorStore.load(tmp_path / "store.bin")
    queries = _vectors(4, seed=2)
    for got, expected in zip(loaded.search(queries, 5), store.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, expected)
    memory = PrototypeMemory(16)
    memory.add(_vectors(8), ["a"] * 4 + ["b"] * 4)
    memory.save(tmp_path / "memory.bin")
    np.testing.assert_array_equal(VectorStore.load(tmp_path / "memory.bin").embeddings, memory.embeddings)
    with pytest.raises(MemoryFileError, match="unlabelled vectors"):
        PrototypeMemory.load(tmp_path / "store.bin")


def test_bad_vectors_are_rejected_with_their_shape() -> None:
    store = VectorStore(16)
    with pytest.raises(ValueError, match=r"shape \(N, 16\)"):
        store.add(np.ones((3, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="all-zero"):
        store.add(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(RuntimeError, match="empty"):
        store.search(_vectors(1), 1)
