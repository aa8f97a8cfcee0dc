"""PrototypeMemory: labelled reference embeddings on a :class:`VectorStore`, matched by cosine similarity.

The memory holds k-shot references of defect types (the few-shot recognizer's and the detector's enrolled
embeddings). A class is scored by the mean similarity to its references (the matching rule of the few-shot
recognizer; exact whatever the index, from per-class sums); below a calibrated similarity the answer is
``"unknown"``. Search, index kinds and storage are the store's.

Large memories: the ``ivfpq`` kind keeps ``pq_bytes`` per reference and no full vectors. To build one across
processes, save the trained empty memory, let each process load it, add its part and save, and join the parts with
:meth:`PrototypeMemory.merged`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from . import storage
from .storage import MemoryFileError
from .vector_store import SECTIONS as STORE_SECTIONS
from .vector_store import SETTINGS as STORE_SETTINGS
from .vector_store import Matrix, VectorStore

UNKNOWN = "unknown"
SECTIONS: dict[str, type[np.generic]] = {
    "vectors": np.float32,
    "codes": np.int32,
    "slots": np.int64,
    "sums": np.float64,
}  # in file order


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
        unknown_threshold: mean similarity below which :meth:`predict` answers ``"unknown"`` (see :meth:`calibrate`).
        store: the :class:`VectorStore` underneath by keyword (``index``: ``"flat"`` exact by default; ``"ivf"``,
            ``"hnsw"`` approximate; ``"ivfpq"`` compressed, for millions of references; ``ivf_lists``, ...).
    """

    def __init__(self, dim: int, unknown_threshold: float | None = None, **store: Any) -> None:
        self.store = VectorStore(dim, **store)
        self.unknown_threshold = unknown_threshold
        self._codes = np.empty(0, dtype=np.int32)  # each reference's label, as a position in _names
        self._names: list[str] = []
        self._sums = np.empty((0, dim), dtype=np.float64)  # per label: sum of its unit vectors
        self._counts = np.empty(0, dtype=np.int64)
        self._metadata: dict[int, dict[str, Any]] = {}  # by row, only the non-empty ones

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.store.dim

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
        return self.store.embeddings

    def train(self, sample: Matrix, seed: int = 0) -> None:
        """Train an ``ivfpq`` memory's lists and quantiser on at most ``train_size`` random rows of ``sample``."""
        self.store.train(sample, seed)

    def add(self, embeddings: Matrix, labels: Sequence[str], metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Store ``embeddings (N, dim)`` with one label (and optional JSON-serialisable metadata) each.

        An untrained ``ivfpq`` memory is first trained on these embeddings.
        """
        vectors = self.store.normalised(embeddings, "embeddings")
        labels = [str(label) for label in labels]
        given = [dict(item) for item in metadata] if metadata is not None else None
        if len(vectors) != len(labels) or (given is not None and len(given) != len(labels)):
            count = len(given) if given is not None else len(labels)
            raise ValueError(f"{len(vectors)} embeddings, {len(labels)} labels and {count} metadata entries")
        if UNKNOWN in labels:
            raise ValueError(f"{UNKNOWN!r} is the answer for no match and cannot be a label")
        if not self.store.trained:
            self.store.train(vectors)
        codes = self._codes_of(labels)
        for code in np.unique(codes):
            self._sums[code] += vectors[codes == code].sum(axis=0, dtype=np.float64)
        self._counts += np.bincount(codes, minlength=len(self._names))
        self._metadata |= {len(self) + i: item for i, item in enumerate(given or []) if item}
        self._codes = np.concatenate([self._codes, codes])
        self.store.add_unit(vectors)

    def add_coreset(self, embeddings: Matrix, label: str, size: int) -> np.ndarray:
        """Add ``size`` of ``embeddings`` chosen by greedy k-center selection (cosine geometry); their rows."""
        vectors, chosen = self.store.coreset(embeddings, size)
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
        self.store.remove(gone)
        new_rows = np.cumsum(keep) - 1
        self._metadata = {int(new_rows[row]): item for row, item in self._metadata.items() if keep[row]}
        self._codes = self._codes[keep]
        self._sums[code], self._counts[code] = 0.0, 0
        return removed

    def search(self, queries: Matrix, k: int = 5) -> SearchResult:
        """The ``k`` most similar references of each query (similarities approximate for ``ivfpq``)."""
        similarities, ids = self.store.search(queries, k)
        labels = [[self._names[self._codes[i]] if i >= 0 else "" for i in row] for row in ids]
        return SearchResult(similarities, ids, labels)

    def class_scores(self, queries: Matrix) -> tuple[np.ndarray, list[str]]:
        """Mean cosine similarity of each query to each class's references ``(Q, n_classes)``, and the classes.

        The mean of the inner products with a class's references is the inner product with their mean, kept as a
        per-class sum: one exact matrix product whatever the index.
        """
        vectors = self.store.normalised(queries, "queries")
        if not len(self):
            raise RuntimeError("the prototype memory is empty: add references first")
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
        self.store.tune(ivf_probes, hnsw_search_depth)

    @classmethod
    def merged(cls, shards: Sequence[PrototypeMemory]) -> PrototypeMemory:
        """One memory with the references of ``shards``, in order: same settings, and ``ivfpq`` shards grown from
        one trained memory (train, save, then load and add in each process)."""
        if not shards:
            raise ValueError("no memories to merge")
        if len({shard.unknown_threshold for shard in shards}) > 1:
            raise ValueError("memories with other settings (unknown_threshold) cannot be merged")
        memory = cls(**shards[0].store.settings(), unknown_threshold=shards[0].unknown_threshold)
        memory.store, _ = VectorStore.merged([shard.store for shard in shards])
        for shard in shards:
            codes = memory._codes_of(shard._names)
            memory._sums[codes] += shard._sums
            memory._counts[codes] += shard._counts
            memory._metadata |= {len(memory) + row: item for row, item in shard._metadata.items()}
            memory._codes = np.concatenate([memory._codes, codes[shard._codes]])
        return memory

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory to ``path`` atomically (temporary file, fsync, rename)."""
        arrays: dict[str, np.ndarray] = {
            "vectors": self.store.vectors,
            "codes": self._codes,
            "slots": self.store.slots,
            "sums": self._sums,
        }
        header = self.store.header() | {
            "unknown_threshold": self.unknown_threshold, "names": self._names, "counts": self._counts.tolist(),
            "metadata": {str(row): item for row, item in self._metadata.items()},
        }  # fmt: skip
        sections = {name: arrays[name].astype(dtype) for name, dtype in SECTIONS.items()}
        storage.save(path, header, sections, self.store.stored_index())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrototypeMemory:
        """Read a memory written by :meth:`save`; :class:`MemoryFileError` if the file is not sound."""
        version, header, sections, index = storage.load(path, SECTIONS)
        if version > 1 and "codes" not in sections:
            raise MemoryFileError(f"{path} holds unlabelled vectors (a VectorStore), not a PrototypeMemory")
        try:
            if version == 1:
                return cls._from_version_1(header, sections["vectors"], index)
            store = VectorStore.from_stored(header, {name: sections[name] for name in STORE_SECTIONS}, index)
            memory = cls(**store.settings(), unknown_threshold=header["unknown_threshold"])
            memory.store, memory._codes = store, sections["codes"]
            memory._sums = sections["sums"].reshape(-1, memory.dim)
            memory._names, memory._counts = list(header["names"]), np.asarray(header["counts"], dtype=np.int64)
            memory._metadata = {int(row): dict(item) for row, item in header["metadata"].items()}
        except (KeyError, TypeError, ValueError) as error:
            raise MemoryFileError(f"{path} has an unreadable header: {error}") from error
        if (len(memory.store), len(memory._sums)) != (len(memory._codes), len(memory._names)):
            raise MemoryFileError(f"{path} has inconsistent sections for {len(memory._codes)} references")
        return memory

    @classmethod
    def _from_version_1(cls, header: dict[str, Any], vectors: np.ndarray, index: faiss.Index | None) -> PrototypeMemory:
        """A memory from a version-1 file (labels and metadata listed in the header; full vectors, then the index)."""
        settings = (*STORE_SETTINGS, "unknown_threshold")
        memory = cls(**{key: header[key] for key in settings if key in header})
        embeddings = vectors.reshape(-1, memory.dim)
        if len(embeddings):
            memory.add(embeddings, header["labels"], header["metadata"])
            memory.store._index = index
        return memory

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
