"""The faiss indexes behind a PrototypeMemory: construction, product-quantiser training, GPU placement, merging.

All indexes use the inner product on unit vectors (cosine similarity). ``flat`` is exact; ``ivf`` and ``hnsw``
are approximate searches over full vectors; ``ivfpq`` stores ``pq_bytes`` per vector (product quantisation of
the residual to its inverted list's centroid) and is trained once, on a sample, before anything is added.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "ivf", "hnsw", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw", "ivfpq")
PQ_CENTROIDS = 256  # 8-bit codes: each sub-quantiser needs at least this many training vectors
MAX_DEFAULT_LISTS = 4096


def default_pq_bytes(dim: int) -> int:
    """The largest divisor of ``dim`` not above ``dim / 2``: 64 bytes per 128-d vector, 8x smaller than float32
    (16 bytes lost most nearest neighbours at 1M-10M references in ``benchmarks/memory_scale.py``)."""
    return max(m for m in range(1, max(1, dim // 2) + 1) if dim % m == 0)


def exact_vectors_index(
    kind: IndexKind, vectors: np.ndarray, ivf_lists: int | None, ivf_probes: int, neighbors: int, search_depth: int
) -> faiss.Index:
    """A ``flat``, ``ivf`` or ``hnsw`` index over ``vectors`` (IVF trained on them; ids are the rows)."""
    dim = vectors.shape[1]
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, neighbors, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efSearch = search_depth
        index = graph
    elif kind == "ivf":
        lists = ivf_lists or max(1, min(len(vectors) // 39, int(4 * np.sqrt(len(vectors)))))
        inverted = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        inverted.train(vectors)
        inverted.nprobe = ivf_probes
        index = inverted
    else:
        raise ValueError(f"{kind!r} is not an index over full vectors")
    index.add(vectors)
    return index


def trained_ivfpq(sample: np.ndarray, lists: int | None, pq_bytes: int, probes: int) -> faiss.IndexIVFPQ:
    """An empty IVF-PQ index whose inverted lists and product quantiser are trained on ``sample`` (unit rows);
    ``pq_bytes`` divides the dimension (PrototypeMemory checks it)."""
    dim = sample.shape[1]
    lists = lists or max(1, min(len(sample) // 39, MAX_DEFAULT_LISTS))
    needed = max(lists, PQ_CENTROIDS)
    if len(sample) < needed:
        raise ValueError(
            f"an ivfpq memory with {lists} lists needs at least {needed} training vectors (39x that is advised), "
            f"got {len(sample)}"
        )
    bits = 8  # PQ_CENTROIDS codes per sub-quantiser
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, pq_bytes, bits, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    index.nprobe = probes
    return index


def on_gpus(index: faiss.Index) -> faiss.Index:
    """``index`` copied onto every GPU faiss sees, or ``index`` itself without GPUs (or for HNSW, CPU-only)."""
    if faiss.get_num_gpus() == 0 or isinstance(index, faiss.IndexHNSW):
        return index
    return faiss.index_cpu_to_all_gpus(index)


def merge_ivf(first: faiss.Index, others: list[faiss.Index], offsets: list[int]) -> faiss.Index:
    """A copy of ``first`` holding also the entries of ``others`` (same training), their ids shifted by ``offsets``."""
    merged = faiss.clone_index(first)
    for index, offset in zip(others, offsets, strict=True):
        merged.merge_from(faiss.clone_index(index), offset)
    return merged


def training_digest(index: faiss.Index) -> str:
    """Fingerprint of an empty trained index: shards can be merged only if built from the same training."""
    return hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest()
