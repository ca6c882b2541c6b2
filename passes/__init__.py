"""Graph rewrites, one module each. `PASSES` maps recipe names to pass classes."""

from .calibrate import Calibrate
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstants
from .quantize_embedding import QuantizeEmbedding
from .quantize_qdq import QuantizeQDQ
from .remove_unused import RemoveUnused
from .simplify import Simplify
from .smoothquant import SmoothQuant
from .weight_only import QuantizeWeightOnly
from .weight_only_awq import QuantizeWeightOnlyAWQ
from .weight_only_gptq import QuantizeWeightOnlyGPTQ

PASSES = {cls.name: cls for cls in (FoldConstants, Simplify, FoldBatchNorm, RemoveUnused, Calibrate, QuantizeQDQ, QuantizeEmbedding, SmoothQuant,
                                         QuantizeWeightOnly, QuantizeWeightOnlyAWQ, QuantizeWeightOnlyGPTQ)}

__all__ = ["PASSES"]
