"""MatMulInt4 CUDA kernels on a GPU (marker `gpu`; skipped without a CUDA device): fresh random inputs
per case, outputs poisoned with NaN before every call, every call checked (the op's own status plus a
synchronize that surfaces asynchronous faults), compared with the float64 reference. Also the ONNX
Runtime CUDA execution provider when the installed onnxruntime has it.

Run on a GPU machine: ONNXCOMP_CACHE=.cache python -m pytest -q -m gpu tests/test_custom_ops_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.custom_ops import build
from onnxcomp.custom_ops.cuda_runner import KernelError, load, matmul_int4
from onnxcomp.custom_ops.reference import matmul_int4_reference, random_operands

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch", reason="torch is needed to drive the CUDA kernels")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU on this machine: MatMulInt4 CUDA tests need one", allow_module_level=True)
if build.find_nvcc() is None:
    pytest.skip("nvcc not found: cannot build the CUDA kernels", allow_module_level=True)


@pytest.fixture(scope="module")
def lib():
    info = build.build_library(cuda=True)
    lib = load(info["path"])
    assert lib.onnxcomp_matmul_int4_has_cuda() == 1
    return lib


def to_cuda(x, dtype=None):
    if x is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(x)).cuda()
    return t.to(dtype) if dtype is not None else t


SHAPES = [
    (1, 100, 24, 32),
    (3, 256, 40, 64),
    (8, 4096, 96, 128),
    (9, 300, 33, 32),
    (17, 1000, 130, 128),
    (128, 512, 64, 64),
    (130, 4100, 70, 32),
    (1, 11008, 16, 128),
    (5, 64, 1, 32),
]


@pytest.mark.parametrize("m,k,n,g", SHAPES)
@pytest.mark.parametrize(
    "dtype,sdtype",
    [
        ("float32", "float32"),
        ("float16", "float16"),
        ("float16", "float32"),
        ("bfloat16", "bfloat16"),
        ("bfloat16", "float32"),
    ],
)
@pytest.mark.parametrize("asym,bias", [(True, True), (False, False)])
def test_cuda_matches_reference(lib, m, k, n, g, dtype, sdtype, asym, bias):
    rng = np.random.default_rng()  # fresh inputs every run
    ops = random_operands(rng, (m,), k, n, g, dtype=np.float32, asymmetric=asym, bias=bias)
    tdt, sdt = getattr(torch, dtype), getattr(torch, sdtype)
    a, s, bb = to_cuda(ops["A"], tdt), to_cuda(ops["scales"], sdt), to_cuda(ops["bias"], tdt)
    b, z = to_cuda(ops["B"]), to_cuda(ops["zero_points"])
    y = torch.full((m, n), float("nan"), dtype=tdt, device="cuda")  # poisoned
    matmul_int4(lib, a, b, s, z, bb, y, k=k, n=n, group_size=g)
    torch.cuda.synchronize()  # raises on an asynchronous CUDA fault

    # the reference sees exactly the values the kernel saw (after rounding to the input dtype)
    def back(t):
        return None if t is None else t.float().cpu().numpy()

    ref = matmul_int4_reference(back(a), ops["B"], back(s), ops["zero_points"], back(bb), k=k, group_size=g)
    out = y.double().cpu().numpy()
    assert np.isfinite(out).all(), "some outputs were not written"
    scale = max(1.0, float(np.abs(ref).max()))
    tol = {"float32": 2e-5 * np.sqrt(k), "float16": 2e-3, "bfloat16": 1.6e-2}[dtype] * scale
    if m > 8 and dtype != "float32":  # tensor-core path: dequantized weights are rounded to fp16/bf16
        tol *= 2
    err = float(np.abs(out - ref).max())
    assert err <= tol, f"max error {err} > {tol}"


def test_misaligned_and_host_pointers_are_errors(lib):
    k, n, g, m = 256, 8, 32, 2
    ops = random_operands(np.random.default_rng(0), (m,), k, n, g)
    a, s, b = to_cuda(ops["A"]), to_cuda(ops["scales"]), to_cuda(ops["B"])
    y = torch.zeros((m, n), device="cuda")
    raw = torch.zeros(b.numel() + 16, dtype=torch.uint8, device="cuda")
    b_off = raw[1 : 1 + b.numel()].view(b.shape)  # 1-byte offset
    b_off.copy_(b)
    with pytest.raises(KernelError, match="'B' must be 16-byte aligned"):
        matmul_int4(lib, a, b_off, s, None, None, y, k=k, n=n, group_size=g)
    with pytest.raises(KernelError, match="not in device memory"):
        matmul_int4(lib, a.cpu(), b, s, None, None, y, k=k, n=n, group_size=g)
    torch.cuda.synchronize()


def test_ort_cuda_execution_provider(lib):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here")
    from test_custom_ops import op_model, reference  # tests/ is on sys.path (rootdir import mode)

    k, n, g = 300, 40, 64
    for m in (1, 4, 33):
        ops = random_operands(np.random.default_rng(), (m,), k, n, g, dtype=np.float16)
        model = op_model(k, n, g, np.float16, np.float16, ["A", "B", "scales", "zero_points", "bias"])
        so = ort.SessionOptions()
        so.register_custom_ops_library(build.library_path(cuda=True))
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CUDAExecutionProvider"])
        y = sess.run(None, ops)[0]
        ref = reference(ops, k, g)
        assert np.abs(y - ref).max() <= 4e-3 * max(1.0, np.abs(ref).max())
