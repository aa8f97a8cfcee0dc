"""PrototypeMemory at scale: the compressed ``ivfpq`` kind, sharded builds merged, version-1 files."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import faiss
import numpy as np
import pytest

from kdanomaly.memory import MemoryFileError, PrototypeMemory
from kdanomaly.memory.storage import MAGIC

DIM = 32


def _clustered(count: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit-free vectors around 40 centres, labelled by which of 4 groups of centres they come from."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    which = rng.integers(40, size=count)
    vectors = centres[which] + 0.4 * rng.normal(size=(count, DIM))
    return vectors.astype(np.float32), [f"type{c % 4}" for c in which]


def _ivfpq(**settings: object) -> PrototypeMemory:
    return PrototypeMemory(DIM, index="ivfpq", ivf_lists=16, ivf_probes=16, pq_bytes=16, **settings)  # type: ignore[arg-type]


def test_ivfpq_keeps_codes_not_vectors_finds_neighbours_and_scores_classes_exactly(tmp_path: Path) -> None:
    vectors, labels = _clustered(10_200)
    vectors, labels, queries = vectors[:10_000], labels[:10_000], vectors[10_000:]
    flat, compressed = PrototypeMemory(DIM), _ivfpq()
    for memory in (flat, compressed):
        memory.add(vectors, labels, [{"n": i} for i in range(len(labels))])
    exact = flat.search(queries, k=10).ids
    found = compressed.search(queries, k=10)
    recall = np.mean([nearest in returned for nearest, returned in zip(exact[:, 0], found.ids, strict=True)])
    assert recall >= 0.8, recall  # the true nearest among the 10 returned; 16 bytes for 32 floats, all lists probed
    assert found.labels[0] == [labels[i] for i in found.ids[0]]
    assert np.allclose(compressed.class_scores(queries)[0], flat.class_scores(queries)[0], atol=1e-5)
    with pytest.raises(ValueError, match="keeps product-quantised codes"):
        _ = compressed.embeddings
    flat.save(tmp_path / "flat.kdm")
    compressed.save(tmp_path / "compressed.kdm")
    assert (tmp_path / "compressed.kdm").stat().st_size < 0.5 * (tmp_path / "flat.kdm").stat().st_size

    assert compressed.remove("type1") == labels.count("type1")
    kept = [i for i, label in enumerate(labels) if label != "type1"]
    after = compressed.search(queries, k=10)
    assert "type1" not in {label for row in after.labels for label in row}
    assert compressed.metadata[5] == {"n": kept[5]} and compressed.labels == [labels[i] for i in kept]
    loaded = PrototypeMemory.load(tmp_path / "compressed.kdm")
    assert loaded.remove("type1") == labels.count("type1")
    again = loaded.search(queries, k=10)
    assert np.array_equal(again.ids, after.ids) and np.array_equal(again.similarities, after.similarities)
    fresh = 3 * np.random.default_rng(9).normal(size=(3, DIM))
    compressed.add(fresh, ["type1"] * 3)  # a removed label comes back: new ids, found again
    assert compressed.search(fresh, k=1).ids[:, 0].tolist() == [len(kept), len(kept) + 1, len(kept) + 2]
    assert compressed.classes == ["type0", "type1", "type2", "type3"]


@pytest.mark.parametrize("kind", ["ivfpq", "flat"])
def test_shards_built_in_separate_processes_merge_into_the_single_build(tmp_path: Path, kind: str) -> None:
    vectors, labels = _clustered(12_100)
    vectors, labels, queries = vectors[:12_000], labels[:12_000], vectors[12_000:]
    template = _ivfpq() if kind == "ivfpq" else PrototypeMemory(DIM)
    if kind == "ivfpq":
        template.train(vectors[:10_000])
    template.save(tmp_path / "template.kdm")
    parts = np.array_split(np.arange(len(vectors)), 3)
    for number, rows in enumerate(parts):  # what each process does
        shard = PrototypeMemory.load(tmp_path / "template.kdm")
        shard.add(vectors[rows], [labels[i] for i in rows], [{"row": int(i)} for i in rows])
        shard.save(tmp_path / f"shard{number}.kdm")
    merged = PrototypeMemory.merged([PrototypeMemory.load(tmp_path / f"shard{n}.kdm") for n in range(3)])
    single = PrototypeMemory.load(tmp_path / "template.kdm")
    single.add(vectors, labels, [{"row": i} for i in range(len(labels))])
    merged.save(tmp_path / "merged.kdm")
    merged = PrototypeMemory.load(tmp_path / "merged.kdm")
    a, b = merged.search(queries, k=7), single.search(queries, k=7)
    assert np.array_equal(a.ids, b.ids) and np.allclose(a.similarities, b.similarities, atol=1e-6)
    assert a.labels == b.labels and merged.labels == labels and merged.metadata[9000] == {"row": 9000}
    assert np.allclose(merged.class_scores(queries)[0], single.class_scores(queries)[0], atol=1e-6)


def test_merging_refuses_separately_trained_or_differently_set_memories() -> None:
    vectors, labels = _clustered(2000)
    one, other = _ivfpq(), _ivfpq()
    one.add(vectors[:1000], labels[:1000])
    other.add(vectors[1000:], labels[1000:])  # trained on other vectors: other lists and codebooks
    with pytest.raises(ValueError, match="trained separately"):
        PrototypeMemory.merged([one, other])
    with pytest.raises(ValueError, match=r"other settings \(index"):
        PrototypeMemory.merged([PrototypeMemory(DIM), PrototypeMemory(DIM, index="hnsw")])
    with pytest.raises(ValueError, match="at least 256 training vectors"):
        _ivfpq().add(vectors[:100], labels[:100])
    with pytest.raises(ValueError, match="must divide"):
        PrototypeMemory(DIM, index="ivfpq", pq_bytes=5)
    with pytest.raises(ValueError, match="only an 'ivfpq' memory is trained"):
        PrototypeMemory(DIM).train(vectors)


def test_version_1_files_still_load(tmp_path: Path) -> None:
    """A file as kdanomaly's first memory format wrote it: labels and metadata in the header, then the vectors."""
    vectors, labels = _clustered(300)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(DIM)
    index.add(unit)
    header = {
        "dim": DIM, "index": "flat", "ivf_lists": None, "ivf_probes": 16, "hnsw_neighbors": 32,
        "hnsw_search_depth": 64, "unknown_threshold": 0.3, "labels": labels, "metadata": [{}] * 299 + [{"x": 1}],
        "embedding_bytes": unit.nbytes,
    }  # fmt: skip
    encoded, payload = json.dumps(header).encode(), unit.tobytes() + faiss.serialize_index(index).tobytes()
    body = MAGIC + struct.pack("<IQQ", 1, len(encoded), len(payload)) + encoded + payload
    (tmp_path / "v1.kdm").write_bytes(body + hashlib.sha256(body).digest())
    memory = PrototypeMemory.load(tmp_path / "v1.kdm")
    assert memory.labels == labels and memory.metadata[299] == {"x": 1} and memory.unknown_threshold == 0.3
    assert memory.search(unit[:5], k=1).ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    (tmp_path / "v1.kdm").write_bytes(body[:-10])
    with pytest.raises(MemoryFileError, match="truncated"):
        PrototypeMemory.load(tmp_path / "v1.kdm")
