"""KDAnomaly: student-teacher knowledge distillation with SimAM and SSPCAB."""

from .lightning_model import KDAnomaly
from .torch_model import KDADModel

__all__ = ["KDADModel", "KDAnomaly"]
