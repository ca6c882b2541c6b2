"""Emission: per-target rules (`targets`, checked by `conformance`) and the writers of quantized layers."""

from onnxcomp.emit.blockwise import FORMATS, BlockwiseEmitter
from onnxcomp.emit.targets import ORT_CPU, ORT_CUDA, PORTABLE, TARGETS, TENSORRT, Target, target_named

__all__ = [
    "FORMATS",
    "ORT_CPU",
    "ORT_CUDA",
    "PORTABLE",
    "TARGETS",
    "TENSORRT",
    "BlockwiseEmitter",
    "Target",
    "target_named",
]
