"""Graph rewrites, one module each. `PASSES` maps recipe names to pass classes."""

from onnxcomp.passes.calibrate import Calibrate
from onnxcomp.passes.convert_fp16 import ConvertFp16
from onnxcomp.passes.fold_batchnorm import FoldBatchNorm
from onnxcomp.passes.fold_constants import FoldConstants
from onnxcomp.passes.guard_speed import GuardSpeed
from onnxcomp.passes.plan_fallback import PlanFallback
from onnxcomp.passes.plan_precision import PlanPrecision
from onnxcomp.passes.prune_structured import PruneStructured
from onnxcomp.passes.quantize_embedding import QuantizeEmbedding
from onnxcomp.passes.quantize_qdq import QuantizeQDQ
from onnxcomp.passes.quantize_weight_only import QuantizeWeightOnly
from onnxcomp.passes.quantize_weight_only_awq import QuantizeWeightOnlyAWQ
from onnxcomp.passes.quantize_weight_only_gptq import QuantizeWeightOnlyGPTQ
from onnxcomp.passes.remove_unused import RemoveUnused
from onnxcomp.passes.simplify import Simplify
from onnxcomp.passes.smoothquant import SmoothQuant
from onnxcomp.passes.split_outliers import SplitOutliers
from onnxcomp.passes.store_fp16 import StoreFp16

PASSES = {
    cls.name: cls
    for cls in (
        FoldConstants,
        Simplify,
        FoldBatchNorm,
        RemoveUnused,
        Calibrate,
        QuantizeQDQ,
        QuantizeEmbedding,
        SmoothQuant,
        SplitOutliers,
        QuantizeWeightOnly,
        QuantizeWeightOnlyAWQ,
        QuantizeWeightOnlyGPTQ,
        PlanPrecision,
        PlanFallback,
        PruneStructured,
        GuardSpeed,
        StoreFp16,
        ConvertFp16,
    )
}

__all__ = ["PASSES"]
