"""PrototypeMemory: labelled reference embeddings in a faiss index, matched by cosine similarity.

Embeddings are L2-normalised on the way in, so the index's inner product is the cosine similarity. The memory
holds k-shot references: labelled defect embeddings for the few-shot recognizer and normal patches for
KDAnomaly's k-shot mode. A class is scored by the mean similarity to its references (the matching rule of the
few-shot recognizer; exact whatever the index, from per-class sums); below a calibrated similarity the answer is
``"unknown"``.

Large memories: the ``ivfpq`` kind keeps ``pq_bytes`` per reference and no full vectors. It is trained once, on a
sample (:meth:`PrototypeMemory.train`, or the first :meth:`~PrototypeMemory.add`). To build one across processes,
save the trained empty memory, let each process load it, add its part and save, and join the parts with
:meth:`PrototypeMemory.merged`. Searches run on every GPU when faiss has GPUs (a ``faiss-gpu`` build), on the CPU
otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch

from .coreset import k_center_greedy
from .indexes import (
    INDEX_KINDS,
    IndexKind,
    default_pq_bytes,
    exact_vectors_index,
    merge_ivf,
    on_gpus,
    trained_ivfpq,
    training_digest,
)
from .storage import MemoryFileError, read_checked, write_atomic

UNKNOWN = "unknown"
Matrix = np.ndarray | torch.Tensor
SETTINGS = (
    "dim", "index", "ivf_lists", "ivf_probes", "hnsw_neighbors", "hnsw_search_depth", "unknown_threshold", "pq_bytes",
    "train_size",
)  # fmt: skip
SECTIONS = (("vectors", np.float32), ("codes", np.int32), ("slots", np.int64), ("sums", np.float64))


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours per query: cosine similarity, row in the memory (-1 if fewer exist) and label."""

    similarities: np.ndarray
    ids: np.ndarray
    labels: list[list[str]]


@dataclass(frozen=True)
class Prediction:
    """Best class per query (``"unknown"`` below the memory's threshold) and its mean similarity."""

    labels: list[str]
    similarities: np.ndarray


class PrototypeMemory:
    """Labelled, L2-normalised embeddings searchable by cosine similarity.

    Args:
        dim: embedding size.
        index: ``"flat"`` (exact, default); ``"ivf"`` (inverted lists, trained on the stored embeddings when first
            searched) or ``"hnsw"`` (graph), approximate over full vectors; ``"ivfpq"`` (inverted lists of
            product-quantised codes, trained on a sample, no full vectors kept) for millions of references.
        ivf_lists, ivf_probes: number of inverted lists (default from the number of vectors) and lists visited per
            query.
        hnsw_neighbors, hnsw_search_depth: HNSW graph degree and ``efSearch``.
        unknown_threshold: mean similarity below which :meth:`predict` answers ``"unknown"`` (see :meth:`calibrate`).
        pq_bytes: bytes per reference of an ``ivfpq`` memory (must divide ``dim``; default about ``dim / 2``).
        train_size: at most this many random sample rows train an ``ivfpq`` memory.
    """

    def __init__(
        self,
        dim: int,
        index: IndexKind = "flat",
        ivf_lists: int | None = None,
        ivf_probes: int = 16,
        hnsw_neighbors: int = 32,
        hnsw_search_depth: int = 64,
        unknown_threshold: float | None = None,
        pq_bytes: int | None = None,
        train_size: int = 100_000,
    ) -> None:
        if dim < 1:
            raise ValueError(f"embedding size must be positive, got {dim}")
        if index not in INDEX_KINDS:
            raise ValueError(f"unknown index {index!r}; use one of {', '.join(INDEX_KINDS)}")
        self.dim = dim
        self.index_kind: IndexKind = index
        self.ivf_lists, self.ivf_probes = ivf_lists, ivf_probes
        self.hnsw_neighbors, self.hnsw_search_depth = hnsw_neighbors, hnsw_search_depth
        self.unknown_threshold = unknown_threshold
        self.pq_bytes, self.train_size = pq_bytes or default_pq_bytes(dim), train_size
        if dim % self.pq_bytes:
            raise ValueError(f"pq_bytes must divide the embedding size {dim}, got {self.pq_bytes}")
        self._vectors = np.empty((0, dim), dtype=np.float32)  # full vectors (none for ivfpq)
        self._codes = np.empty(0, dtype=np.int32)  # each reference's label, as a position in _names
        self._names: list[str] = []
        self._sums = np.empty((0, dim), dtype=np.float64)  # per label: sum of its unit vectors
        self._counts = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int64)  # each reference's faiss id, increasing
        self._next_slot = 0
        self._metadata: dict[int, dict[str, Any]] = {}  # by row, only the non-empty ones
        self._index: faiss.Index | None = None
        self._searcher: faiss.Index | None = None  # _index, or its copy on the GPUs
        self._training: str | None = None  # digest of the ivfpq training

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def compressed(self) -> bool:
        """Whether only product-quantised codes are kept (the ``ivfpq`` kind)."""
        return self.index_kind == "ivfpq"

    @property
    def classes(self) -> list[str]:
        """The labels present, sorted."""
        return sorted(name for name, count in zip(self._names, self._counts, strict=True) if count)

    @property
    def labels(self) -> list[str]:
        """Each reference's label, in row order."""
        return [self._names[code] for code in self._codes]

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Each reference's metadata, in row order."""
        return [self._metadata.get(row, {}) for row in range(len(self))]

    @property
    def embeddings(self) -> np.ndarray:
        """The stored unit vectors ``(N, dim)``; an ``ivfpq`` memory keeps none."""
        if self.compressed:
            raise ValueError("an 'ivfpq' memory keeps product-quantised codes, not the embeddings")
        return self._vectors

    def train(self, sample: Matrix, seed: int = 0) -> None:
        """Train an ``ivfpq`` memory's lists and quantiser on at most ``train_size`` random rows of ``sample``."""
        if not self.compressed:
            raise ValueError(f"only an 'ivfpq' memory is trained on a sample; {self.index_kind!r} needs no training")
        if self._index is not None:
            raise RuntimeError("this memory is trained already; train a new memory for another training")
        vectors = self._normalised(sample, "sample")
        if len(vectors) > self.train_size:
            vectors = vectors[np.random.default_rng(seed).choice(len(vectors), self.train_size, replace=False)]
        index = trained_ivfpq(vectors, self.ivf_lists, self.pq_bytes, self.ivf_probes)
        self.ivf_lists, self._training, self._index = index.nlist, training_digest(index), index

    def add(self, embeddings: Matrix, labels: Sequence[str], metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Store ``embeddings (N, dim)`` with one label (and optional JSON-serialisable metadata) each.

        An untrained ``ivfpq`` memory is first trained on these embeddings.
        """
        vectors = self._normalised(embeddings, "embeddings")
        labels = [str(label) for label in labels]
        given = [dict(item) for item in metadata] if metadata is not None else None
        if len(vectors) != len(labels) or (given is not None and len(given) != len(labels)):
            count = len(given) if given is not None else len(labels)
            raise ValueError(f"{len(vectors)} embeddings, {len(labels)} labels and {count} metadata entries")
        if UNKNOWN in labels:
            raise ValueError(f"{UNKNOWN!r} is the answer for no match and cannot be a label")
        if self.compressed and self._index is None:
            self.train(vectors)
        codes = self._codes_of(labels)
        for code in np.unique(codes):
            self._sums[code] += vectors[codes == code].sum(axis=0, dtype=np.float64)
        self._counts += np.bincount(codes, minlength=len(self._names))
        self._metadata |= {len(self) + i: item for i, item in enumerate(given or []) if item}
        slots = np.arange(self._next_slot, self._next_slot + len(vectors), dtype=np.int64)
        self._codes, self._slots = np.concatenate([self._codes, codes]), np.concatenate([self._slots, slots])
        self._next_slot += len(vectors)
        if self.compressed:
            self._index.add_with_ids(vectors, slots)
        else:
            self._vectors = np.concatenate([self._vectors, vectors])
            if self._index is not None and self.index_kind != "ivf":
                self._index.add(vectors)
            else:
                self._index = None  # (re)built at the next search; IVF retrains its lists on all embeddings
        self._searcher = None

    def add_coreset(self, embeddings: Matrix, label: str, size: int) -> np.ndarray:
        """Add ``size`` of ``embeddings`` chosen by greedy k-center selection (cosine geometry); their rows."""
        vectors = self._normalised(embeddings, "embeddings")
        chosen = k_center_greedy(torch.from_numpy(vectors), min(size, len(vectors))).numpy()
        self.add(vectors[chosen], [label] * len(chosen))
        return chosen

    def remove(self, label: str) -> int:
        """Remove every reference of ``label``; the number removed."""
        if label not in self._names:
            return 0
        code = self._names.index(label)
        gone = self._codes == code
        removed = int(gone.sum())
        if not removed:
            return 0
        keep = ~gone
        if self.compressed:
            self._index.remove_ids(self._slots[gone])
            self._slots = self._slots[keep]
        else:
            self._vectors, self._index = self._vectors[keep], None
            self._slots, self._next_slot = np.arange(int(keep.sum()), dtype=np.int64), int(keep.sum())
        new_rows = np.cumsum(keep) - 1
        self._metadata = {int(new_rows[row]): item for row, item in self._metadata.items() if keep[row]}
        self._codes = self._codes[keep]
        self._sums[code], self._counts[code] = 0.0, 0
        self._searcher = None
        return removed

    def search(self, queries: Matrix, k: int = 5) -> SearchResult:
        """The ``k`` most similar references of each query (similarities approximate for ``ivfpq``)."""
        vectors = self._normalised(queries, "queries")
        self._require_references()
        if self._searcher is None:
            self._searcher = on_gpus(self._searchable())
        similarities, slots = self._searcher.search(vectors, k)
        ids = np.where(slots >= 0, np.searchsorted(self._slots, slots), -1)
        labels = [[self._names[self._codes[i]] if i >= 0 else "" for i in row] for row in ids]
        return SearchResult(similarities, ids, labels)

    def class_scores(self, queries: Matrix) -> tuple[np.ndarray, list[str]]:
        """Mean cosine similarity of each query to each class's references ``(Q, n_classes)``, and the classes.

        The mean of the inner products with a class's references is the inner product with their mean, kept as a
        per-class sum: one exact matrix product whatever the index.
        """
        vectors = self._normalised(queries, "queries")
        self._require_references()
        classes = self.classes
        codes = [self._names.index(name) for name in classes]
        means = self._sums[codes] / self._counts[codes, None]
        return vectors @ means.astype(np.float32).T, classes

    def predict(self, queries: Matrix) -> Prediction:
        """The class with the highest mean similarity per query, ``"unknown"`` below the threshold."""
        scores, classes = self.class_scores(queries)
        best = scores.argmax(axis=1)
        similarities = scores[np.arange(len(scores)), best]
        threshold = -np.inf if self.unknown_threshold is None else self.unknown_threshold
        labels = [classes[i] if s >= threshold else UNKNOWN for i, s in zip(best, similarities, strict=True)]
        return Prediction(labels, similarities)

    def calibrate(self, queries: Matrix, false_unknown_rate: float = 0.05) -> float:
        """Set the unknown threshold so that a fraction ``false_unknown_rate`` of known-class queries fall below."""
        if not 0 <= false_unknown_rate < 1:
            raise ValueError(f"false_unknown_rate must be in [0, 1), got {false_unknown_rate}")
        best = self.class_scores(queries)[0].max(axis=1)
        self.unknown_threshold = float(np.quantile(best, false_unknown_rate, method="lower"))
        return self.unknown_threshold

    def tune(self, ivf_probes: int | None = None, hnsw_search_depth: int | None = None) -> None:
        """Change the approximate index's search effort (more: higher recall, slower) without rebuilding it."""
        if ivf_probes is not None:
            self.ivf_probes = ivf_probes
        if hnsw_search_depth is not None:
            self.hnsw_search_depth = hnsw_search_depth
        if isinstance(self._index, faiss.IndexIVF):
            self._index.nprobe = self.ivf_probes
        elif isinstance(self._index, faiss.IndexHNSW):
            self._index.hnsw.efSearch = self.hnsw_search_depth
        self._searcher = None

    @classmethod
    def merged(cls, shards: Sequence[PrototypeMemory]) -> PrototypeMemory:
        """One memory with the references of ``shards``, in order: same settings, and ``ivfpq`` shards grown from
        one trained memory (train, save, then load and add in each process)."""
        if not shards:
            raise ValueError("no memories to merge")
        first = shards[0]
        for shard in shards[1:]:
            differing = [key for key, value in shard._settings().items() if first._settings()[key] != value]
            if differing:
                raise ValueError(f"memories with other settings ({', '.join(differing)}) cannot be merged")
            if shard._training != first._training:
                raise ValueError("ivfpq memories trained separately cannot be merged: train one and add to its copies")
        memory = cls(**first._settings())
        memory._training = first._training
        offsets = [memory._append(shard) for shard in shards]
        if first._index is not None and first.compressed:
            memory._index = merge_ivf(first._index, [shard._index for shard in shards[1:]], offsets[1:])
        return memory

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory to ``path`` atomically (temporary file, fsync, rename)."""
        index = self._index if self.compressed else (self._searchable() if len(self) else None)
        sections = {name: getattr(self, f"_{name}").astype(dtype) for name, dtype in SECTIONS}
        header = self._settings() | {
            "names": self._names, "counts": self._counts.tolist(), "next_slot": self._next_slot,
            "training": self._training, "metadata": {str(row): item for row, item in self._metadata.items()},
            "sections": {name: array.nbytes for name, array in sections.items()},
        }  # fmt: skip
        index_bytes = faiss.serialize_index(index).tobytes() if index is not None else b""
        write_atomic(path, header, b"".join(array.tobytes() for array in sections.values()) + index_bytes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrototypeMemory:
        """Read a memory written by :meth:`save`; :class:`MemoryFileError` if the file is not sound."""
        version, header, payload = read_checked(path)
        try:
            if version == 1:
                return cls._from_version_1(header, payload)
            memory = cls(**{key: header[key] for key in SETTINGS})
            start = 0
            for name, dtype in SECTIONS:
                end = start + header["sections"][name]
                setattr(memory, f"_{name}", np.frombuffer(payload[start:end], dtype=dtype).copy())
                start = end
            memory._vectors = memory._vectors.reshape(-1, memory.dim)
            memory._sums = memory._sums.reshape(-1, memory.dim)
            memory._names, memory._counts = list(header["names"]), np.asarray(header["counts"], dtype=np.int64)
            memory._next_slot, memory._training = int(header["next_slot"]), header["training"]
            memory._metadata = {int(row): dict(item) for row, item in header["metadata"].items()}
        except (KeyError, TypeError, ValueError) as error:
            raise MemoryFileError(f"{path} has an unreadable header: {error}") from error
        rows, vectors = len(memory._codes), 0 if memory.compressed else len(memory._codes)
        if (len(memory._slots), len(memory._vectors), len(memory._sums)) != (rows, vectors, len(memory._names)):
            raise MemoryFileError(f"{path} has inconsistent sections for {rows} references")
        if start < len(payload):
            memory._index = faiss.deserialize_index(np.frombuffer(payload[start:], dtype=np.uint8))
        return memory

    @classmethod
    def _from_version_1(cls, header: dict[str, Any], payload: bytes) -> PrototypeMemory:
        """A memory from a version-1 file (labels and metadata listed in the header; full vectors, then the index)."""
        memory = cls(**{key: header[key] for key in SETTINGS if key in header})
        split = header["embedding_bytes"]
        embeddings = np.frombuffer(payload[:split], dtype=np.float32).reshape(-1, memory.dim)
        if len(embeddings):
            memory.add(embeddings, header["labels"], header["metadata"])
            memory._index = faiss.deserialize_index(np.frombuffer(payload[split:], dtype=np.uint8))
        return memory

    def _settings(self) -> dict[str, Any]:
        return {key: getattr(self, "index_kind" if key == "index" else key) for key in SETTINGS}

    def _codes_of(self, labels: list[str]) -> np.ndarray:
        """Positions of ``labels`` in ``_names``, registering new names."""
        positions = {name: code for code, name in enumerate(self._names)}
        for name in dict.fromkeys(labels):
            if name not in positions:
                positions[name] = len(self._names)
                self._names.append(name)
        grow = len(self._names) - len(self._counts)
        self._sums = np.concatenate([self._sums, np.zeros((grow, self.dim))])
        self._counts = np.concatenate([self._counts, np.zeros(grow, dtype=np.int64)])
        return np.fromiter((positions[name] for name in labels), dtype=np.int32, count=len(labels))

    def _append(self, other: PrototypeMemory) -> int:
        """Add ``other``'s references (not its index) after this memory's; the offset added to its faiss ids."""
        codes = self._codes_of(other._names)
        self._sums[codes] += other._sums
        self._counts[codes] += other._counts
        self._metadata |= {len(self) + row: item for row, item in other._metadata.items()}
        offset = self._next_slot
        self._codes = np.concatenate([self._codes, codes[other._codes]])
        self._slots = np.concatenate([self._slots, other._slots + offset])
        self._vectors = np.concatenate([self._vectors, other._vectors])
        self._next_slot += other._next_slot
        return offset

    def _normalised(self, matrix: Matrix, name: str) -> np.ndarray:
        """``matrix`` as float32 rows of unit length; ValueError for anything else."""
        array = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (N, {self.dim}), got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name} must be floating point, got {array.dtype}")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{name} contain all-zero rows, which have no direction")
        return np.ascontiguousarray(array / norms)

    def _require_references(self) -> None:
        if not len(self):
            raise RuntimeError("the prototype memory is empty: add references first")

    def _searchable(self) -> faiss.Index:
        """The faiss index over all stored embeddings, built (and for IVF trained) when missing."""
        if self._index is None:
            self._index = exact_vectors_index(
                self.index_kind, self._vectors, self.ivf_lists, self.ivf_probes, self.hnsw_neighbors,
                self.hnsw_search_depth,
            )  # fmt: skip
        return self._index
