"""PrototypeMemory: labelled reference embeddings in a faiss index, matched by cosine similarity.

Embeddings are L2-normalised on the way in, so the index's inner product is the cosine similarity. The memory
holds k-shot references: labelled defect embeddings for the few-shot recognizer and normal patches for
KDAnomaly's k-shot mode. A class is scored by the mean similarity to its references (the matching rule of the
few-shot recognizer); below a calibrated similarity the answer is ``"unknown"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import torch

from .coreset import k_center_greedy
from .storage import MemoryFileError, read_checked, write_atomic

IndexKind = Literal["flat", "ivf", "hnsw"]
UNKNOWN = "unknown"
Matrix = np.ndarray | torch.Tensor


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
        index: ``"flat"`` (exact, default), ``"ivf"`` (inverted lists, trained on the stored embeddings when
            first searched) or ``"hnsw"`` (graph) for large memories.
        ivf_lists, ivf_probes: number of IVF lists (default ``4 * sqrt(N)``) and lists visited per query.
        hnsw_neighbors, hnsw_search_depth: HNSW graph degree and ``efSearch``.
        unknown_threshold: mean similarity below which :meth:`predict` answers ``"unknown"`` (see :meth:`calibrate`).
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
    ) -> None:
        if dim < 1:
            raise ValueError(f"embedding size must be positive, got {dim}")
        if index not in ("flat", "ivf", "hnsw"):
            raise ValueError(f"unknown index {index!r}; use 'flat', 'ivf' or 'hnsw'")
        self.dim = dim
        self.index_kind: IndexKind = index
        self.ivf_lists, self.ivf_probes = ivf_lists, ivf_probes
        self.hnsw_neighbors, self.hnsw_search_depth = hnsw_neighbors, hnsw_search_depth
        self.unknown_threshold = unknown_threshold
        self.embeddings = np.empty((0, dim), dtype=np.float32)
        self.labels: list[str] = []
        self.metadata: list[dict[str, Any]] = []
        self._index: faiss.Index | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        """The labels present, sorted."""
        return sorted(set(self.labels))

    def add(self, embeddings: Matrix, labels: Sequence[str], metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Store ``embeddings (N, dim)`` with one label (and optional JSON-serialisable metadata) each."""
        vectors = self._normalised(embeddings, "embeddings")
        labels = [str(label) for label in labels]
        metadata = [dict(item) for item in metadata] if metadata is not None else [{} for _ in labels]
        if not len(vectors) == len(labels) == len(metadata):
            raise ValueError(f"{len(vectors)} embeddings, {len(labels)} labels and {len(metadata)} metadata entries")
        if UNKNOWN in labels:
            raise ValueError(f"{UNKNOWN!r} is the answer for no match and cannot be a label")
        self.embeddings = np.concatenate([self.embeddings, vectors])
        self.labels += labels
        self.metadata += metadata
        if self._index is not None and self._index.is_trained and self.index_kind != "ivf":
            self._index.add(vectors)
        else:
            self._index = None  # (re)built at the next search; IVF retrains its lists on all embeddings

    def add_coreset(self, embeddings: Matrix, label: str, size: int) -> np.ndarray:
        """Add ``size`` of ``embeddings`` chosen by greedy k-center selection (cosine geometry); their rows."""
        vectors = self._normalised(embeddings, "embeddings")
        chosen = k_center_greedy(torch.from_numpy(vectors), min(size, len(vectors))).numpy()
        self.add(vectors[chosen], [label] * len(chosen))
        return chosen

    def remove(self, label: str) -> int:
        """Remove every reference of ``label``; the number removed."""
        keep = np.array([existing != label for existing in self.labels], dtype=bool)
        removed = int((~keep).sum())
        if removed:
            self.embeddings = self.embeddings[keep]
            self.labels = [name for name, kept in zip(self.labels, keep, strict=True) if kept]
            self.metadata = [item for item, kept in zip(self.metadata, keep, strict=True) if kept]
            self._index = None
        return removed

    def search(self, queries: Matrix, k: int = 5) -> SearchResult:
        """The ``k`` most similar references of each query."""
        vectors = self._normalised(queries, "queries")
        self._require_references()
        similarities, ids = self._searchable().search(vectors, k)
        labels = [[self.labels[i] if i >= 0 else "" for i in row] for row in ids]
        return SearchResult(similarities, ids, labels)

    def class_scores(self, queries: Matrix) -> tuple[np.ndarray, list[str]]:
        """Mean cosine similarity of each query to each class's references ``(Q, n_classes)``, and the classes.

        The mean of the inner products with a class's references is the inner product with their mean, so this
        is one exact matrix product whatever the index.
        """
        vectors = self._normalised(queries, "queries")
        self._require_references()
        classes = self.classes
        label_array = np.asarray(self.labels)
        means = np.stack([self.embeddings[label_array == name].mean(axis=0) for name in classes])
        return vectors @ means.T, classes

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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory to ``path`` atomically (temporary file, fsync, rename)."""
        index_bytes = faiss.serialize_index(self._searchable()).tobytes() if len(self) else b""
        header = {
            "dim": self.dim,
            "index": self.index_kind,
            "ivf_lists": self.ivf_lists,
            "ivf_probes": self.ivf_probes,
            "hnsw_neighbors": self.hnsw_neighbors,
            "hnsw_search_depth": self.hnsw_search_depth,
            "unknown_threshold": self.unknown_threshold,
            "labels": self.labels,
            "metadata": self.metadata,
            "embedding_bytes": self.embeddings.nbytes,
        }
        write_atomic(path, header, self.embeddings.tobytes() + index_bytes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrototypeMemory:
        """Read a memory written by :meth:`save`; :class:`MemoryFileError` if the file is not sound."""
        header, payload = read_checked(path)
        try:
            memory = cls(
                header["dim"],
                header["index"],
                header["ivf_lists"],
                header["ivf_probes"],
                header["hnsw_neighbors"],
                header["hnsw_search_depth"],
                header["unknown_threshold"],
            )
            split = header["embedding_bytes"]
            embeddings = np.frombuffer(payload[:split], dtype=np.float32).reshape(-1, memory.dim).copy()
            labels, metadata = list(header["labels"]), list(header["metadata"])
        except (KeyError, TypeError, ValueError) as error:
            raise MemoryFileError(f"{path} has an unreadable header: {error}") from error
        if not len(embeddings) == len(labels) == len(metadata):
            raise MemoryFileError(f"{path} holds {len(embeddings)} embeddings for {len(labels)} labels")
        memory.embeddings, memory.labels, memory.metadata = embeddings, labels, metadata
        if len(labels):
            memory._index = faiss.deserialize_index(np.frombuffer(payload[split:], dtype=np.uint8))
        return memory

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
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> faiss.Index:
        if self.index_kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif self.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.hnsw_search_depth
        else:
            lists = self.ivf_lists or max(1, min(len(self) // 39, int(4 * np.sqrt(len(self)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.train(self.embeddings)
            index.nprobe = self.ivf_probes
        index.add(self.embeddings)
        return index
