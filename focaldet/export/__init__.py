"""Export a trained detector to ONNX or TorchScript (``focaldet export``; see docs/export.md)."""
from focaldet.export.exporter import ExportError, export_model, run_exported
from focaldet.export.wrapper import DetectionExport, RawExport

__all__ = ["DetectionExport", "ExportError", "RawExport", "export_model", "run_exported"]
