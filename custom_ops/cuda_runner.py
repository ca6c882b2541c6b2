"""Call the CUDA kernels of the built library on torch CUDA tensors (ctypes; used by the GPU tests,
the benchmark and the TensorRT plugin). Imports torch lazily; stdlib + numpy otherwise."""

from __future__ import annotations

import ctypes

_CODES = {"float32": 1, "float16": 10, "bfloat16": 16}


class KernelError(RuntimeError):
    """The operator refused the call (bad argument) or a CUDA call failed."""


def _ptr(t):
    """The device address of a tensor, or None."""
    return None if t is None else t.data_ptr()


def load(path: str):
    lib = ctypes.CDLL(path)
    f = lib.onnxcomp_matmul_int4
    f.restype = ctypes.c_char_p
    f.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4 + [ctypes.c_void_p]
    lib.onnxcomp_matmul_int4_has_cuda.restype = ctypes.c_int
    return lib


def dtype_code(t) -> int:
    name = str(t.dtype).replace("torch.", "")
    if name not in _CODES:
        raise KernelError(f"MatMulInt4: unsupported dtype {name}")
    return _CODES[name]


def matmul_int4(lib, a, b, scales, zero_points, bias, y, *, k: int, n: int, group_size: int, stream=None) -> None:
    """y[M, N] = a[M, K] . dequant(b)^T (+ bias) on the GPU; all tensors contiguous CUDA tensors."""
    import torch

    m = a.numel() // k
    st = stream if stream is not None else torch.cuda.current_stream().cuda_stream
    msg = lib.onnxcomp_matmul_int4(
        1,
        dtype_code(a),
        dtype_code(scales),
        _ptr(a),
        _ptr(b),
        _ptr(scales),
        _ptr(zero_points),
        _ptr(bias),
        _ptr(y),
        m,
        n,
        k,
        group_size,
        st,
    )
    if msg is not None:
        raise KernelError(msg.decode())
