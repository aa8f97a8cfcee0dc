"""The faiss memory shared by KDAnomaly's k-shot mode and the few-shot models, in two layers: a
:class:`VectorStore` of unit vectors (index, coreset, storage) and, on top, the labelled :class:`PrototypeMemory`."""

from .coreset import k_center_greedy
from .prototype_memory import UNKNOWN, Prediction, PrototypeMemory, SearchResult
from .storage import MemoryFileError
from .vector_store import VectorStore

__all__ = [
    "UNKNOWN",
    "MemoryFileError",
    "Prediction",
    "PrototypeMemory",
    "SearchResult",
    "VectorStore",
    "k_center_greedy",
]
