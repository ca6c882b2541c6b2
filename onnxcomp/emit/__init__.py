"""Emission: per-target rules (`targets`) and the writers of quantized layers in each runtime's ops."""

from onnxcomp.emit.blockwise import FORMATS, BlockwiseEmitter
from onnxcomp.emit.targets import ORT_CPU, Target

__all__ = ["FORMATS", "ORT_CPU", "BlockwiseEmitter", "Target"]
