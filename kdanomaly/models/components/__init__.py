"""Building blocks shared by kdanomaly's models."""

from .backbone import TimmFeatures, validate_image_size
from .simam import SimAM, insert_simam

__all__ = ["SimAM", "TimmFeatures", "insert_simam", "validate_image_size"]
