"""Supervised few-shot defect detector (deformable conv, Ghost-conv FPN, contrastive proposal encoding)."""

from .lightning_model import FewShotDetector
from .torch_model import DefectDetectorNet

__all__ = ["DefectDetectorNet", "FewShotDetector"]
