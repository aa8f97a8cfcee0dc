"""The faiss prototype memory shared by KDAnomaly's k-shot mode and the few-shot recognizer."""

from .coreset import k_center_greedy
from .prototype_memory import UNKNOWN, Prediction, PrototypeMemory, SearchResult
from .storage import MemoryFileError

__all__ = ["UNKNOWN", "MemoryFileError", "Prediction", "PrototypeMemory", "SearchResult", "k_center_greedy"]
