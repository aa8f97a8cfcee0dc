"""Building blocks shared by kdanomaly's models."""

from .backbone import DEFAULT_BACKBONE, TimmFeatures, create_backbone, validate_image_size
from .simam import SimAM, insert_simam

__all__ = ["DEFAULT_BACKBONE", "SimAM", "TimmFeatures", "create_backbone", "insert_simam", "validate_image_size"]
