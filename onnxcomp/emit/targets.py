"""Deployment targets: what a runtime accepts, declared once, and the check every output passes.

A `Target` lists the op domains a runtime runs, the blockwise weight formats it has kernels for
(`onnxcomp.emit.blockwise.FORMATS`; the first is the default) and the QDQ activation dtypes
(the first is the default). Passes and emitters read these instead of hard-coding a runtime's
rules. Today: ONNX Runtime on the CPU; ORT CUDA, TensorRT and portable standard ONNX are the next
targets (a registry by name and a conformance check of every output against `domains` come with
them).
"""

from dataclasses import dataclass

from onnxcomp.custom_ops.reference import DOMAIN as CUSTOM_DOMAIN


@dataclass(frozen=True)
class Target:
    name: str
    domains: tuple[str, ...]  # op domains its runtime executes ("" is the ONNX default domain)
    weight_only_formats: tuple[str, ...]
    activation_dtypes: tuple[str, ...]


# ONNX Runtime, CPU execution provider (ai.onnxcomp ops need the custom-op library registered)
ORT_CPU = Target(
    "ort-cpu",
    domains=("", "com.microsoft", CUSTOM_DOMAIN),
    weight_only_formats=("matmulnbits", "qdq", "custom"),
    activation_dtypes=("uint8", "int8"),
)
