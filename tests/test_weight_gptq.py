"""GPTQ weight-only: the numpy algorithm against RTN on correlated inputs, and the pass on a tiny graph."""

import numpy as np
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.blockwise import dequantize_blockwise, quantize_blockwise
from onnxcomp.errors import OnnxcompError
from onnxcomp.gptq import HessianAccumulator, gptq_quantize, hessian_error


def correlated(rows=512, k=200, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    x = rng.standard_normal((rows, k)) @ mix
    x[:, 3] *= 20.0  # an outlier channel, as in LLM activations
    return x


def test_hessian_accumulator_streams_2xtx_over_rows():
    x = correlated(rows=64, k=16)
    acc = HessianAccumulator(16)
    acc.add(x[:40].reshape(2, 20, 16))
    acc.add(x[40:])
    np.testing.assert_allclose(acc.hessian, 2 * x.T @ x / 64)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits, group", [(4, 32), (4, 128), (8, 64)])
def test_gptq_lowers_the_output_error_below_rtn(act_order, symmetric, bits, group):
    x = correlated()
    w = np.random.default_rng(1).standard_normal((200, 24)).astype(np.float32) * 0.05  # K = 200: last block padded
    hess = 2 * x.T @ x / len(x)
    q = gptq_quantize(w, hess, bits, group, symmetric, act_order=act_order, block=64)
    rtn = quantize_blockwise(w, bits, group, symmetric)
    # same layout and the same scales/zero points as RTN: only the codes differ
    assert q.codes.shape == rtn.codes.shape and (q.codes.max() <= 2**bits - 1)
    np.testing.assert_array_equal(q.scales, rtn.scales)
    np.testing.assert_array_equal(q.zero_points, rtn.zero_points)
    assert (q.codes[:, -1, 200 - (q.n_blocks - 1) * group:] == 0).all()  # padding codes are 0
    out_gptq = np.linalg.norm(x @ dequantize_blockwise(q) - x @ w)
    out_rtn = np.linalg.norm(x @ dequantize_blockwise(rtn) - x @ w)
    assert out_gptq < 0.8 * out_rtn, (out_gptq, out_rtn)
    assert hessian_error(w, dequantize_blockwise(q), hess) < hessian_error(w, dequantize_blockwise(rtn), hess)


def test_gptq_dead_inputs_and_bad_hessian():
    x = correlated(k=64)
    x[:, 5] = 0.0  # an input that is always 0: its weight row does not matter and is stored as 0
    w = np.random.default_rng(2).standard_normal((64, 8)).astype(np.float32)
    q = gptq_quantize(w, 2 * x.T @ x / len(x), 4, 32, True)
    assert np.isfinite(dequantize_blockwise(q)).all()
    with pytest.raises(OnnxcompError, match="does not match"):
        gptq_quantize(w, np.eye(10), 4, 32)
    with pytest.raises(OnnxcompError, match="bits must be one of"):
        gptq_quantize(w, np.eye(64), 3, 32)


def tiny_linear(tiny, k=96):
    rng = np.random.default_rng(0)
    nodes = [h.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"), h.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
             h.make_node("Add", ["q", "k"], ["s"]), h.make_node("MatMul", ["s", "wo"], ["y"], name="o_proj")]
    inits = {"wq": (rng.standard_normal((k, 32)) * 0.1).astype(np.float32),
             "wk": (rng.standard_normal((k, 32)) * 0.1).astype(np.float32),
             "wo": (rng.standard_normal((32, 16)) * 0.1).astype(np.float32)}
    return tiny.make_model(nodes, [("x", [4, k])], [("y", [4, 16])], inits, infer_shapes=True)


def calibration(k=96, n=8):
    x = correlated(rows=4 * n, k=k).astype(np.float32)
    return [{"x": x[i * 4:(i + 1) * 4]} for i in range(n)]


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
def test_gptq_pass_beats_rtn_on_the_calibration_output(tiny, fmt):
    model = tiny_linear(tiny)
    calib = calibration()
    options = {"group_size": 32, "output_layer_bits": 0, "format": fmt}
    gptq = onnxcomp.compress(model, [("quantize_weight_only_gptq", options)], calibration=calib, use_cache=False)
    rtn = onnxcomp.compress(model, [("quantize_weight_only", options)], use_cache=False)
    ref = np.concatenate([tiny.run(model, f)[0] for f in calib])
    err_g = np.linalg.norm(np.concatenate([tiny.run(gptq.model, f)[0] for f in calib]) - ref)
    err_r = np.linalg.norm(np.concatenate([tiny.run(rtn.model, f)[0] for f in calib]) - ref)
    assert err_g < err_r, (err_g, err_r)
    details = next(p for p in gptq.report["passes"] if p["pass"] == "quantize_weight_only_gptq")["details"]
    assert [l["node"] for l in details["layers"]] == ["q_proj", "k_proj", "o_proj"]
    assert details["hessian_inputs"] == 2  # q_proj and k_proj read the same x
    for layer in details["layers"]:
        assert layer["algorithm"] == "gptq" and layer["bits"] == 4 and layer["group_size"] == 32
        assert layer["relative_output_error"] <= layer["relative_output_error_rtn"]


def test_gptq_without_calibration_names_the_option(tiny):
    with pytest.raises(OnnxcompError, match="calib"):
        onnxcomp.compress(tiny_linear(tiny), "w4a16-gptq", use_cache=False)


@pytest.mark.parametrize("options, message", [({"damp": 1.5}, "damp must be"), ({"clip_search": True}, "unknown option .clip_search."),
                                              ({"bits": 3}, "bits must be one of"), ({"algorithm": "awq"}, "must be 'gptq'")])
def test_gptq_bad_options(tiny, options, message):
    with pytest.raises(OnnxcompError, match=message):
        onnxcomp.compress(tiny_linear(tiny), [("quantize_weight_only_gptq", options)], calibration=calibration(), use_cache=False)
