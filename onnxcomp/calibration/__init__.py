"""Calibration: data readers, statistic requests, bounded collectors, and the ONNX Runtime runners."""

from onnxcomp.calibration.collectors import METHODS, TensorStats
from onnxcomp.calibration.readers import make_reader
from onnxcomp.calibration.requests import GramRequest, RangeRequest, RowsRequest, Statistics
from onnxcomp.calibration.runner import collect

__all__ = [
    "METHODS",
    "GramRequest",
    "RangeRequest",
    "RowsRequest",
    "Statistics",
    "TensorStats",
    "collect",
    "make_reader",
]
