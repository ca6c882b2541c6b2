"""Deployment targets: what a runtime accepts, declared once, and the check every output passes.

A `Target` lists the op domains a runtime runs, the blockwise weight formats it has kernels for
(`onnxcomp.emit.blockwise.FORMATS`; the first is the default) and the QDQ activation dtypes
(the first is the default). Passes read these instead of hard-coding a runtime's rules, and
`check_conformance` names the first node of a model the target cannot run. Today: ONNX Runtime
on the CPU; ORT CUDA, TensorRT and portable standard ONNX are the next entries.
"""

from dataclasses import dataclass

import onnx_ir as ir

from onnxcomp.custom_ops.reference import DOMAIN as CUSTOM_DOMAIN
from onnxcomp.errors import OnnxcompError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    domains: tuple[str, ...]  # op domains its runtime executes ("" is the ONNX default domain)
    weight_only_formats: tuple[str, ...]
    activation_dtypes: tuple[str, ...]


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


ORT_CPU = register(Target(
    "ort-cpu", "ONNX Runtime, CPU execution provider (ai.onnxcomp ops need the custom-op library)",
    domains=("", "com.microsoft", CUSTOM_DOMAIN), weight_only_formats=("matmulnbits", "qdq", "custom"),
    activation_dtypes=("uint8", "int8")))


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise OnnxcompError(f"unknown target {name!r} (choose from {', '.join(sorted(TARGETS))})")
    return TARGETS[name]


def check_conformance(model: ir.Model, target: Target) -> None:
    """Raise one line naming the first node whose op domain the target does not run."""
    for node in model.graph.all_nodes():
        if node.domain not in target.domains and not (node.domain == "ai.onnx" and "" in target.domains):
            raise OnnxcompError(f"node {node.name!r} ({node.domain}::{node.op_type}) cannot run on target "
                                f"{target.name!r} (domains: {', '.join(d or 'ai.onnx' for d in target.domains)})")
