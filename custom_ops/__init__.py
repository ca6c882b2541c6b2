"""The project's own int4 weight-only GEMM operator, ai.onnxcomp::MatMulInt4 (see README.md here).

``library_path()`` builds (once, cached by a hash of the sources) and returns the shared library
to pass to ``onnxruntime.SessionOptions.register_custom_ops_library``. This package uses only the
standard library and numpy, so the GPU benchmark can import it straight from a checkout.
"""

from .build import BuildError, build_library, library_path
from .reference import DOMAIN, OP_TYPE, matmul_int4_reference, pack_int4, pack_zero_points

__all__ = [
    "BuildError",
    "DOMAIN",
    "OP_TYPE",
    "build_library",
    "library_path",
    "matmul_int4_reference",
    "pack_int4",
    "pack_zero_points",
]
