"""Calibration: data readers, bounded statistics collectors, and the ONNX Runtime runner."""

from .collectors import METHODS, TensorStats
from .readers import make_reader
from .runner import collect_statistics

__all__ = ["METHODS", "TensorStats", "collect_statistics", "make_reader"]
