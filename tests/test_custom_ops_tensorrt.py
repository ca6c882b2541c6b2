"""TensorRT binding of MatMulInt4. TensorRT cannot be installed here: the plugin module must import
without it, say why registration is impossible, and its shape rule and kernel marshalling (shared
with the plugin callbacks) are checked on the CPU. The engine test runs only where TensorRT exists."""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np
import pytest

from onnxcomp.custom_ops import build
from onnxcomp.custom_ops import tensorrt_plugin as trt_plugin
from onnxcomp.custom_ops.reference import matmul_int4_reference, random_operands

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


class FakeTensor:
    """What the plugin's impl reads from trtp.Tensor: data_ptr, dtype, shape (host memory here)."""

    def __init__(self, array, dtype=None):
        self.array = np.ascontiguousarray(array)
        self.data_ptr = self.array.ctypes.data
        self.dtype = dtype or str(self.array.dtype)
        self.shape = self.array.shape


def test_import_is_lazy_and_unavailability_is_explained():
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(trt_plugin.TensorRTUnavailable, match="tensorrt.plugin"):
        trt_plugin.register()


def test_shape_rule_and_checks():
    assert trt_plugin.output_shape((2, 7, 100), 24) == (2, 7, 24)
    trt_plugin.check_inputs((3, 100), (24, 4, 16), (24, 4), (24, 2), (24,), K=100, N=24, bits=4, group_size=32)
    with pytest.raises(ValueError, match=r"'B' has shape \[24, 3, 16\], expected \[24, 4, 16\]"):
        trt_plugin.check_inputs((3, 100), (24, 3, 16), (24, 4), (24, 2), (24,), K=100, N=24, bits=4, group_size=32)
    with pytest.raises(ValueError, match="bits=8"):
        trt_plugin.check_inputs((3, 100), (24, 4, 16), (24, 4), (24, 2), (24,), K=100, N=24, bits=8, group_size=32)


@pytest.mark.parametrize("dtype,trt_name", [(np.float32, "DataType.FLOAT"), (np.float16, "DataType.HALF")])
def test_plugin_launch_marshalling_on_cpu(dtype, trt_name):
    """The plugin's enqueue path (launch) with device=0 runs the CPU kernel through the same call,
    with the 0x88 zero points / zero bias a TensorRT emitter uses for absent optional inputs."""
    lib = ctypes.CDLL(build.library_path(cuda=False))
    lib.onnxcomp_matmul_int4.restype = ctypes.c_char_p
    lib.onnxcomp_matmul_int4.argtypes = (
        [ctypes.c_int] * 3 + [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4 + [ctypes.c_void_p]
    )
    k, n, g = 130, 20, 64
    ops = random_operands(np.random.default_rng(2), (2, 3), k, n, g, dtype=dtype, asymmetric=False, bias=False)
    zp = np.full((n, 2), 0x88, np.uint8)
    bias = np.zeros(n, dtype)
    y = FakeTensor(np.zeros((2, 3, n), dtype), trt_name)
    trt_plugin.launch(
        lib,
        FakeTensor(ops["A"], trt_name),
        FakeTensor(ops["B"]),
        FakeTensor(ops["scales"], trt_name),
        FakeTensor(zp),
        FakeTensor(bias, trt_name),
        y,
        K=k,
        N=n,
        group_size=g,
        device=0,
    )
    ref = matmul_int4_reference(ops["A"], ops["B"], ops["scales"], None, None, k=k, group_size=g)
    tol = 1e-4 if dtype == np.float32 else 2e-3
    assert np.abs(y.array - ref).max() <= tol * max(1.0, np.abs(ref).max())
    with pytest.raises(RuntimeError, match="group_size must be"):
        trt_plugin.launch(
            lib,
            FakeTensor(ops["A"], trt_name),
            FakeTensor(ops["B"]),
            FakeTensor(ops["scales"], trt_name),
            None,
            None,
            y,
            K=k,
            N=n,
            group_size=48,
            device=0,
        )


@pytest.mark.gpu
@pytest.mark.skipif(
    not HAVE_TRT,
    reason="TensorRT is not installable on these machines (NVIDIA's index is "
    "unreachable); the plugin is checked by construction on the CPU",
)
def test_tensorrt_registration():
    assert trt_plugin.register() == "onnxcomp::MatMulInt4"
