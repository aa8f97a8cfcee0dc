"""VectorStore: unit vectors in a faiss index, searched by cosine similarity; the layer under every memory.

Vectors are L2-normalised on the way in, so the index's inner product is the cosine similarity. The store knows
rows, not labels: KDAnomaly's k-shot memory keeps a coreset of normal patches in one directly, and
:class:`~kdanomaly.memory.PrototypeMemory` puts labels, class means and metadata on top of one.

Large stores: the ``ivfpq`` kind keeps ``pq_bytes`` per vector and no full vectors. It is trained once, on a sample
(:meth:`VectorStore.train`, or the first :meth:`~VectorStore.add`). Searches run on every GPU when faiss has GPUs
(a ``faiss-gpu`` build), on the CPU otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
import torch

from . import storage
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

Matrix = np.ndarray | torch.Tensor
SETTINGS = ("dim", "index", "ivf_lists", "ivf_probes", "hnsw_neighbors", "hnsw_search_depth", "pq_bytes", "train_size")
SECTIONS: dict[str, type[np.generic]] = {"vectors": np.float32, "slots": np.int64}


class VectorStore:
    """L2-normalised vectors searchable by cosine similarity; rows numbered in the order they were added.

    Args:
        dim: vector size.
        index: ``"flat"`` (exact, default); ``"ivf"`` (inverted lists, trained on the stored vectors when first
            searched) or ``"hnsw"`` (graph), approximate over full vectors; ``"ivfpq"`` (inverted lists of
            product-quantised codes, trained on a sample, no full vectors kept) for millions of vectors.
        ivf_lists, ivf_probes: number of inverted lists (default from the number of vectors) and lists visited per
            query.
        hnsw_neighbors, hnsw_search_depth: HNSW graph degree and ``efSearch``.
        pq_bytes: bytes per vector of an ``ivfpq`` store (must divide ``dim``; default about ``dim / 2``).
        train_size: at most this many random sample rows train an ``ivfpq`` store.
    """

    def __init__(
        self,
        dim: int,
        index: IndexKind = "flat",
        ivf_lists: int | None = None,
        ivf_probes: int = 16,
        hnsw_neighbors: int = 32,
        hnsw_search_depth: int = 64,
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
        self.pq_bytes, self.train_size = pq_bytes or default_pq_bytes(dim), train_size
        if dim % self.pq_bytes:
            raise ValueError(f"pq_bytes must divide the embedding size {dim}, got {self.pq_bytes}")
        self.vectors = np.empty((0, dim), dtype=np.float32)  # full vectors (none for ivfpq)
        self.slots = np.empty(0, dtype=np.int64)  # each row's faiss id, increasing
        self.next_slot = 0
        self.training: str | None = None  # digest of the ivfpq training
        self._index: faiss.Index | None = None
        self._searcher: faiss.Index | None = None  # _index, or its copy on the GPUs

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def compressed(self) -> bool:
        """Whether only product-quantised codes are kept (the ``ivfpq`` kind)."""
        return self.index_kind == "ivfpq"

    @property
    def trained(self) -> bool:
        """Whether an ``ivfpq`` store has its lists and quantiser (other kinds need no training)."""
        return not self.compressed or self._index is not None

    @property
    def embeddings(self) -> np.ndarray:
        """The stored unit vectors ``(N, dim)``; an ``ivfpq`` store keeps none."""
        if self.compressed:
            raise ValueError("an 'ivfpq' memory keeps product-quantised codes, not the embeddings")
        return self.vectors

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that reproduce this store's configuration."""
        return {key: getattr(self, "index_kind" if key == "index" else key) for key in SETTINGS}

    def normalised(self, matrix: Matrix, name: str) -> np.ndarray:
        """``matrix`` as float32 rows of unit length; ValueError naming ``name`` for anything else."""
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

    def train(self, sample: Matrix, seed: int = 0) -> None:
        """Train an ``ivfpq`` store's lists and quantiser on at most ``train_size`` random rows of ``sample``."""
        if not self.compressed:
            raise ValueError(f"only an 'ivfpq' memory is trained on a sample; {self.index_kind!r} needs no training")
        if self._index is not None:
            raise RuntimeError("this memory is trained already; train a new memory for another training")
        vectors = self.normalised(sample, "sample")
        if len(vectors) > self.train_size:
            vectors = vectors[np.random.default_rng(seed).choice(len(vectors), self.train_size, replace=False)]
        index = trained_ivfpq(vectors, self.ivf_lists, self.pq_bytes, self.ivf_probes)
        self.ivf_lists, self.training, self._index = index.nlist, training_digest(index), index

    def add(self, vectors: Matrix) -> np.ndarray:
        """Normalise and store ``vectors (N, dim)`` (an untrained ``ivfpq`` store is first trained on them); the
        unit rows stored."""
        unit = self.normalised(vectors, "embeddings")
        self.add_unit(unit)
        return unit

    def add_unit(self, unit: np.ndarray) -> None:
        """Store rows that :meth:`normalised` returned (no second normalisation, so no rounding change)."""
        if not self.trained:
            self.train(unit)
        slots = np.arange(self.next_slot, self.next_slot + len(unit), dtype=np.int64)
        self.slots = np.concatenate([self.slots, slots])
        self.next_slot += len(unit)
        if self.compressed:
            self._codes_index().add_with_ids(unit, slots)
        else:
            self.vectors = np.concatenate([self.vectors, unit])
            if self._index is not None and self.index_kind != "ivf":
                self._index.add(unit)
            else:
                self._index = None  # (re)built at the next search; IVF retrains its lists on all vectors
        self._searcher = None

    def coreset(self, vectors: Matrix, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``vectors`` as unit rows and the rows of ``size`` of them chosen by greedy k-center selection in cosine
        geometry (nothing stored)."""
        unit = self.normalised(vectors, "embeddings")
        return unit, k_center_greedy(torch.from_numpy(unit), min(size, len(unit))).numpy()

    def add_coreset(self, vectors: Matrix, size: int) -> np.ndarray:
        """Store the :meth:`coreset` of ``vectors``; the rows of ``vectors`` chosen."""
        unit, chosen = self.coreset(vectors, size)
        self.add(unit[chosen])
        return chosen

    def remove(self, gone: np.ndarray) -> None:
        """Remove the rows where the boolean mask ``gone (N,)`` is true; later rows move up."""
        keep = ~gone
        if self.compressed:
            self._codes_index().remove_ids(self.slots[gone])
            self.slots = self.slots[keep]
        else:
            self.vectors, self._index = self.vectors[keep], None
            self.slots, self.next_slot = np.arange(int(keep.sum()), dtype=np.int64), int(keep.sum())
        self._searcher = None

    def search(self, queries: Matrix, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities ``(Q, k)`` of each query's ``k`` nearest rows and those rows (-1 if fewer exist);
        similarities approximate for ``ivfpq``."""
        vectors = self.normalised(queries, "queries")
        if not len(self):
            raise RuntimeError("the prototype memory is empty: add references first")
        if self._searcher is None:
            self._searcher = on_gpus(self._searchable())
        similarities, slots = self._searcher.search(vectors, k)
        return similarities, np.where(slots >= 0, np.searchsorted(self.slots, slots), -1)

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
    def merged(cls, shards: Sequence[VectorStore]) -> tuple[VectorStore, list[int]]:
        """One store with the rows of ``shards``, in order, and the offset added to each shard's faiss ids; same
        settings, and ``ivfpq`` shards grown from one trained store (train, save, then load and add in each
        process)."""
        if not shards:
            raise ValueError("no memories to merge")
        first = shards[0]
        for shard in shards[1:]:
            differing = [key for key, value in shard.settings().items() if first.settings()[key] != value]
            if differing:
                raise ValueError(f"memories with other settings ({', '.join(differing)}) cannot be merged")
            if shard.training != first.training:
                raise ValueError("ivfpq memories trained separately cannot be merged: train one and add to its copies")
        store = cls(**first.settings())
        store.training = first.training
        offsets = []
        for shard in shards:
            offsets.append(store.next_slot)
            store.slots = np.concatenate([store.slots, shard.slots + store.next_slot])
            store.vectors = np.concatenate([store.vectors, shard.vectors])
            store.next_slot += shard.next_slot
        if first._index is not None and first.compressed:
            store._index = merge_ivf(first._codes_index(), [shard._codes_index() for shard in shards[1:]], offsets[1:])
        return store, offsets

    def stored_index(self) -> faiss.Index | None:
        """The index a file keeps: an ``ivfpq`` store's own (its codes), else the one over the vectors, if any."""
        return self._index if self.compressed else (self._searchable() if len(self) else None)

    def header(self) -> dict[str, Any]:
        """Settings and bookkeeping a file keeps beside the vectors."""
        return self.settings() | {"next_slot": self.next_slot, "training": self.training}

    @classmethod
    def from_stored(
        cls, header: dict[str, Any], sections: dict[str, np.ndarray], index: faiss.Index | None
    ) -> VectorStore:
        """A store from what :meth:`header`, :data:`SECTIONS` and :meth:`stored_index` wrote; KeyError or
        ValueError if they do not fit together."""
        store = cls(**{key: header[key] for key in SETTINGS})
        store.vectors = sections["vectors"].reshape(-1, store.dim)
        store.slots, store.next_slot, store.training = sections["slots"], int(header["next_slot"]), header["training"]
        if len(store.vectors) != (0 if store.compressed else len(store.slots)):
            raise ValueError(f"{len(store.vectors)} vectors for {len(store.slots)} rows")
        store._index = index
        return store

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to ``path`` atomically (temporary file, fsync, rename)."""
        sections = {name: getattr(self, name).astype(dtype) for name, dtype in SECTIONS.items()}
        storage.save(path, self.header(), sections, self.stored_index())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VectorStore:
        """Read a store written by :meth:`save` (or the store under a saved PrototypeMemory);
        :class:`~kdanomaly.memory.MemoryFileError` if the file is not sound."""
        version, header, sections, index = storage.load(path, SECTIONS)
        if version == 1:
            raise storage.MemoryFileError(f"{path} is a version-1 prototype memory; load it with PrototypeMemory")
        try:
            return cls.from_stored(header, sections, index)
        except (KeyError, TypeError, ValueError) as error:
            raise storage.MemoryFileError(f"{path} has an unreadable header: {error}") from error

    def _codes_index(self) -> faiss.Index:
        """A trained ``ivfpq`` store's index (it holds the codes)."""
        if self._index is None:
            raise RuntimeError("this ivfpq memory is not trained yet: train it or add vectors first")
        return self._index

    def _searchable(self) -> faiss.Index:
        """The faiss index over all stored vectors, built (and for IVF trained) when missing."""
        if self._index is None:
            self._index = exact_vectors_index(
                self.index_kind, self.vectors, self.ivf_lists, self.ivf_probes, self.hnsw_neighbors,
                self.hnsw_search_depth,
            )  # fmt: skip
        return self._index
