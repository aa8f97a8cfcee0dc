"""Scoring engines: the KDAnomaly scoring graph on PyTorch, ONNX Runtime or OpenVINO (fp32, bf16, int8), and the
exported file set (model + ``model.json``) they open."""

from .export import export_model
from .manifest import Manifest, ManifestError
from .opening import ENGINES, PRECISIONS, OpenedModel, open_model

__all__ = ["ENGINES", "PRECISIONS", "Manifest", "ManifestError", "OpenedModel", "export_model", "open_model"]
