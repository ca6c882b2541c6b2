"""ai.onnxcomp::MatMulInt4: the CPU kernel through ONNX Runtime (our library loaded with
register_custom_ops_library) against a float64 numpy reference, layout identity with ORT's
com.microsoft.MatMulNBits, bad input, the cached build, the CUDA build (compile + link with nvcc
for sm_80/sm_90, zero spills) and the `build-ops` command."""

from __future__ import annotations

import ctypes
import json
import shutil
import zlib

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxcomp.custom_ops import build
from onnxcomp.custom_ops.reference import (
    matmul_int4_reference,
    pack_int4,
    pack_zero_points,
    random_operands,
    unpack_int4,
    unpack_zero_points,
)

NAMES = ("A", "B", "scales", "zero_points", "bias")


@pytest.fixture(scope="session")
def cpu_lib():
    return build.library_path(cuda=False)


def op_model(k, n, g, a_dtype, s_dtype, present, *, bits=4, attrs=None, node_inputs=None):
    """A one-node model: Y = MatMulInt4(A, B, scales[, zero_points][, bias])."""
    elem = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
    types = {
        "A": elem[a_dtype],
        "B": TensorProto.UINT8,
        "scales": elem[s_dtype],
        "zero_points": TensorProto.UINT8,
        "bias": elem[a_dtype],
    }
    inputs = node_inputs or [name if name in present else "" for name in NAMES]
    while inputs and inputs[-1] == "":
        inputs.pop()
    a = dict(K=k, N=n, bits=bits, group_size=g)
    a.update(attrs or {})
    a = {key: v for key, v in a.items() if v is not None}
    node = helper.make_node("MatMulInt4", inputs, ["Y"], domain="ai.onnxcomp", name="int4_gemm", **a)
    graph = helper.make_graph(
        [node],
        "matmul_int4",
        [helper.make_tensor_value_info(x, types[x], None) for x in NAMES if x in present],
        [helper.make_tensor_value_info("Y", elem[a_dtype], None)],
    )
    return helper.make_model(
        graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnxcomp", 1)]
    )


def session(model, lib):
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_op(lib, ops, k, n, g, **kw):
    present = [x for x in NAMES if ops.get(x) is not None]
    model = op_model(k, n, g, ops["A"].dtype.type, ops["scales"].dtype.type, present, **kw)
    return session(model, lib).run(None, {x: ops[x] for x in present})[0]


def reference(ops, k, g):
    return matmul_int4_reference(ops["A"], ops["B"], ops["scales"], ops["zero_points"], ops["bias"], k=k, group_size=g)


CASES = [  # (batch shape of A, K, N, group, asymmetric, bias, dtype, scale dtype)
    ((1,), 100, 24, 32, True, True, np.float32, np.float32),
    ((3,), 100, 40, 64, False, False, np.float32, np.float32),
    ((17,), 300, 33, 128, True, False, np.float32, np.float32),
    ((40,), 700, 37, 64, True, True, np.float32, np.float32),  # M >= 24: packed 6x16 tiles, ragged M and N
    ((128,), 256, 64, 32, False, True, np.float32, np.float32),
    ((2, 5), 200, 20, 64, True, True, np.float32, np.float32),
    ((1,), 4096, 8, 128, True, True, np.float32, np.float32),
    ((1,), 100, 24, 32, True, True, np.float16, np.float16),
    ((3,), 130, 16, 64, False, True, np.float16, np.float16),
    ((17,), 96, 48, 32, True, False, np.float16, np.float32),
    ((128,), 500, 30, 128, False, False, np.float16, np.float16),
    ((2, 3, 4), 64, 9, 32, True, True, np.float16, np.float32),
    ((3,), 1, 5, 32, True, True, np.float32, np.float32),  # K = 1: one nibble of a 32-group
    ((2,), 1000, 300, 128, True, True, np.float32, np.float32),
    ((2, 2), 2048, 520, 32, False, True, np.float16, np.float32),  # M = 4, big enough for the thread pool
]


@pytest.mark.parametrize("m_shape,k,n,g,asym,bias,dtype,sdtype", CASES)
def test_cpu_matches_float64_reference(cpu_lib, m_shape, k, n, g, asym, bias, dtype, sdtype):
    rng = np.random.default_rng(zlib.crc32(repr((m_shape, k, n, g, asym, bias, dtype.__name__)).encode()))
    ops = random_operands(rng, m_shape, k, n, g, dtype=dtype, scale_dtype=sdtype, asymmetric=asym, bias=bias)
    y = run_op(cpu_lib, ops, k, n, g)
    ref = reference(ops, k, g)
    assert y.dtype == dtype and y.shape == (*m_shape, n)
    scale = max(1.0, float(np.abs(ref).max()))
    tol = 2e-5 * np.sqrt(k) * scale if dtype == np.float32 else 1e-3 * scale  # fp16: output rounding
    err = float(np.abs(y.astype(np.float64) - ref).max())
    assert err <= tol, f"max error {err} > {tol}"


def test_large_problem_runs_on_ort_thread_pool(cpu_lib):
    """Big enough to be split into tasks on ONNX Runtime's intra-op pool (KernelContext_ParallelFor,
    OrtApi slot 274, enabled only after the slot-254 cross-check); same answer as the reference."""
    k, n, g = 1024, 260, 64
    ops = random_operands(np.random.default_rng(11), (9,), k, n, g)
    y = run_op(cpu_lib, ops, k, n, g)
    assert ctypes.CDLL(cpu_lib).onnxcomp_matmul_int4_uses_ort_threads() == 1
    ref = reference(ops, k, g)
    assert np.abs(y - ref).max() <= 2e-5 * np.sqrt(k) * max(1.0, np.abs(ref).max())


def test_reference_detects_a_wrong_nibble(cpu_lib):
    """The comparison can fail: flip one weight nibble and the op disagrees with the old reference."""
    rng = np.random.default_rng(1)
    ops = random_operands(rng, (3,), 64, 4, 32, asymmetric=False, bias=False)
    ref = reference(ops, 64, 32)
    ops["B"] = ops["B"].copy()
    ops["B"][2, 1, 3] ^= 0x10  # (n=2, k=32+7): high nibble of byte 3 in block 1
    y = run_op(cpu_lib, ops, 64, 4, 32)
    diff = np.abs(y - ref).max(axis=0)
    assert diff[2] > 1e-3 and diff[[0, 1, 3]].max() < 1e-4


def test_packing_round_trip_and_layout():
    q = np.arange(2 * 40, dtype=np.uint8).reshape(2, 40) % 16
    b = pack_int4(q, 32)
    assert b.shape == (2, 2, 16)
    assert b[0, 0, 0] == (q[0, 0] | (q[0, 1] << 4)) and b[1, 1, 3] == (q[1, 38] | (q[1, 39] << 4))
    assert (b[:, 1, 4:] == 0).all()  # padding nibbles for k >= K are 0
    assert (unpack_int4(b, 40) == q).all()
    zp = np.array([[1, 2, 3]], np.uint8)
    zpp = pack_zero_points(zp)
    assert zpp.tolist() == [[0x21, 0x03]] and (unpack_zero_points(zpp, 3) == zp).all()


@pytest.mark.parametrize("asym", [True, False])
def test_same_layout_as_ort_matmulnbits(cpu_lib, asym):
    """Identical bytes fed to com.microsoft.MatMulNBits (bits=4) give the same result."""
    k, n, g = 200, 24, 64
    rng = np.random.default_rng(7)
    ops = random_operands(rng, (5,), k, n, g, asymmetric=asym, bias=False)
    ours = run_op(cpu_lib, ops, k, n, g)
    inputs = ["A", "B", "scales"] + (["zero_points"] if asym else [])
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=g)
    feeds = {"A": ops["A"], "B": ops["B"], "scales": ops["scales"].reshape(-1)}
    if asym:
        feeds["zero_points"] = ops["zero_points"].reshape(-1)
    graph = helper.make_graph(
        [node],
        "nbits",
        [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(feeds[x].dtype), None) for x in inputs],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    theirs = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(ours, theirs, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(ours, reference(ops, k, g), atol=1e-4, rtol=1e-4)


def _ops(k=100, n=8, g=32, m=3, **kw):
    return random_operands(np.random.default_rng(3), (m,), k, n, g, **kw)


@pytest.mark.parametrize(
    "attrs,match",
    [
        ({"bits": 3}, "bits=3 is not supported"),
        ({"group_size": 16}, "group_size=16 is not supported"),
        ({"K": None}, "attribute 'K' is missing"),
    ],
)
def test_bad_attributes(cpu_lib, attrs, match):
    ops = _ops()
    present = list(NAMES)
    model = op_model(100, 8, 32, np.float32, np.float32, present, attrs=attrs)
    with pytest.raises(Exception, match=match):
        session(model, cpu_lib).run(None, ops)


@pytest.mark.parametrize(
    "change,match",
    [
        (
            lambda o: o.update(A=o["A"][:, :99].copy()),
            r"input 'A' has shape \[3, 99\], its last dimension must be K=100",
        ),
        (lambda o: o.update(B=o["B"][:7].copy()), r"input 'B' has shape \[7, 4, 16\], expected \[8, 4, 16\]"),
        (lambda o: o.update(scales=o["scales"][:, :3].copy()), r"input 'scales' has shape \[8, 3\], expected \[8, 4\]"),
        (
            lambda o: o.update(zero_points=o["zero_points"][:, :1].copy()),
            r"'zero_points' has shape \[8, 1\], expected \[8, 2\]",
        ),
        (lambda o: o.update(bias=o["bias"][:5].copy()), r"input 'bias' has shape \[5\], expected \[8\]"),
    ],
)
def test_bad_shapes_give_clear_errors(cpu_lib, change, match):
    ops = _ops()
    change(ops)
    with pytest.raises(Exception, match=match):
        run_op(cpu_lib, ops, 100, 8, 32)


def test_wrong_dtype_rejected(cpu_lib):
    ops = _ops()
    ops["scales"] = ops["scales"].astype(np.float64)
    model = op_model(100, 8, 32, np.float32, np.float32, list(NAMES))
    model.graph.input[2].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception, match="MatMulInt4|scales|type"):
        session(model, cpu_lib).run(None, ops)


def _raw(lib_path):
    lib = ctypes.CDLL(lib_path)
    f = lib.onnxcomp_matmul_int4
    f.restype = ctypes.c_char_p
    f.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4 + [ctypes.c_void_p]
    return lib, f


def _ptr(x):
    return None if x is None else x.ctypes.data


def test_bf16_and_entry_point_on_cpu(cpu_lib):
    """bfloat16 (no numpy dtype) through the library's plain C entry point."""
    _, f = _raw(cpu_lib)
    k, n, g, m = 160, 12, 32, 5
    ops = random_operands(np.random.default_rng(5), (m,), k, n, g)

    def to_bf16(x):  # truncation: exact input
        return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)

    a, s, b = to_bf16(ops["A"]), to_bf16(ops["scales"]), to_bf16(ops["bias"])

    def from_bf16(x):
        return (x.astype(np.uint32) << 16).view(np.float32)

    y = np.zeros((m, n), np.uint16)
    err = f(0, 16, 16, _ptr(a), _ptr(ops["B"]), _ptr(s), _ptr(ops["zero_points"]), _ptr(b), _ptr(y), m, n, k, g, None)
    assert err is None
    ref = matmul_int4_reference(
        from_bf16(a), ops["B"], from_bf16(s), ops["zero_points"], from_bf16(b), k=k, group_size=g
    )
    assert np.abs(from_bf16(y) - ref).max() <= 1e-2 * max(1.0, np.abs(ref).max())
    bad = f(0, 16, 16, _ptr(a), _ptr(ops["B"]), _ptr(s), None, None, _ptr(y), m, n, k, 48, None)
    assert b"group_size must be 32, 64 or 128" in bad


def test_build_is_cached_and_keyed_by_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    shutil.copytree(build.SRC, src)
    monkeypatch.setattr(build, "SRC", src)
    first = build.build_library(cuda=False)
    again = build.build_library(cuda=False)
    assert not first["cached"] and again["cached"] and again["path"] == first["path"]
    (src / "int4_gemm_cpu.cc").write_text((src / "int4_gemm_cpu.cc").read_text() + "\n// changed\n")
    changed = build.build_library(cuda=False)
    assert not changed["cached"] and changed["path"] != first["path"]


def test_portable_build_without_avx2_matches(tmp_path, monkeypatch):
    """The scalar fallback (built without -march=x86-64-v3) computes the same as the AVX2 kernel."""
    monkeypatch.setenv("ONNXCOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_cpu_flags", lambda: [])
    lib = build.library_path(cuda=False)
    for m in (1, 6):
        ops = random_operands(np.random.default_rng(m), (m,), 300, 70, 64)
        y = run_op(lib, ops, 300, 70, 64)
        ref = reference(ops, 300, 64)
        assert np.abs(y - ref).max() <= 2e-5 * np.sqrt(300) * max(1.0, np.abs(ref).max())


def test_build_without_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(build, "find_cxx", lambda: None)
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler found"):
        build.build_library(cuda=False)
    monkeypatch.setattr(build, "find_cxx", lambda: "/usr/bin/g++")
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(build.BuildError, match="nvcc was not found"):
        build.build_library(cuda=True)


def test_cli_build_ops_json():
    from onnxcomp.cli import cli

    res = CliRunner().invoke(cli, ["build-ops", "--cpu-only", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["cuda"] is False and info["path"].endswith("libonnxcomp_ops.so")


@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not installed: the CUDA build cannot be checked here")
def test_cuda_build_compiles_links_and_cpu_op_still_works():
    """nvcc compiles the kernels for sm_80 and sm_90 with zero spills, the library links and loads on
    a machine without a GPU, and the CPU kernel in it runs under ONNX Runtime."""
    info = build.build_library(cuda=True)
    assert info["cuda"] and info["archs"] == ["sm_80", "sm_90"]
    kernels = info["kernels"]
    for arch in ("sm_80", "sm_90"):
        names = " ".join(k["kernel"] for k in kernels if k["arch"] == arch)
        for kind in ("gemv_kernel", "mma_kernel", "simt_kernel"):
            assert kind in names, f"{kind} missing for {arch}"
    spilled = [k for k in kernels if k.get("spill_stores", 1) or k.get("spill_loads", 1) or k.get("stack", 1)]
    assert not spilled, f"kernels with spills/stack: {spilled[:3]}"
    lib, f = _raw(info["path"])
    assert lib.onnxcomp_matmul_int4_has_cuda() == 1
    ops = _ops(m=3)
    y = run_op(info["path"], ops, 100, 8, 32)
    np.testing.assert_allclose(y, reference(ops, 100, 32), atol=1e-4, rtol=1e-4)
    # the CUDA entry point with host memory (and no GPU here) answers with an error, not a crash
    out = np.zeros((3, 8), np.float32)
    msg = f(1, 1, 1, _ptr(ops["A"]), _ptr(ops["B"]), _ptr(ops["scales"]), None, None, _ptr(out), 3, 8, 100, 32, None)
    assert msg is not None and b"MatMulInt4 CUDA" in msg
