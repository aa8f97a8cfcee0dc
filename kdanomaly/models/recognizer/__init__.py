"""Few-shot defect recognizer."""

from .lightning_model import FewShotRecognizer

__all__ = ["FewShotRecognizer"]
