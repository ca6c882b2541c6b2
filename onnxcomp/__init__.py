"""onnxcomp: a compiler that makes ONNX models small and fast.

    import onnxcomp
    result = onnxcomp.compress("model.onnx", "int8", calibration="calib_dir/")
    result.save("model.int8.onnx"); print(result.report["passes"])

Layers and data flow: ARCHITECTURE.md.
"""

from onnxcomp.api import CompressResult, compress
from onnxcomp.errors import OnnxcompError

__version__ = "0.1.0"
__all__ = ["CompressResult", "OnnxcompError", "compress", "__version__"]
