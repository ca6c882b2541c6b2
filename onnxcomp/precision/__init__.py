"""Precision plans: which scheme each layer gets, as data the quantization appliers read."""

from onnxcomp.precision.plan import PrecisionPlan, Scheme, weight_only_plan

__all__ = ["PrecisionPlan", "Scheme", "weight_only_plan"]
