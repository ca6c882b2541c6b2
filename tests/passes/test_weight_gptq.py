"""GPTQ weight-only: the numpy algorithm against RTN on correlated inputs, the staged (sequential)
Hessian collection against hand-computed references, and the pass on tiny graphs."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.algorithms import gptq
from onnxcomp.algorithms.blockwise import dequantize_blockwise, quantize_blockwise
from onnxcomp.algorithms.gptq import gptq_quantize, hessian_errors
from onnxcomp.calibration.collectors import GramAccumulator
from onnxcomp.calibration.requests import GramRequest
from onnxcomp.calibration.runner import collect
from onnxcomp.calibration.staged import StagedHessians
from onnxcomp.errors import OnnxcompError


def correlated(rows=512, k=200, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    x = rng.standard_normal((rows, k)) @ mix
    x[:, 3] *= 20.0  # an outlier channel, as in LLM activations
    return x


def test_hessian_accumulator_streams_2xtx_over_rows():
    x = correlated(rows=64, k=16)
    acc = GramAccumulator(16)
    acc.add(x[:40].reshape(2, 20, 16))
    acc.add(x[40:])
    np.testing.assert_allclose(acc.hessian, 2 * x.T @ x / 64)


@pytest.mark.parametrize("groups", ["static", "lazy", "act_order", "clip"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits, group", [(4, 32), (4, 128), (8, 64)])
def test_gptq_lowers_the_output_error_below_rtn(groups, symmetric, bits, group):
    x = correlated()
    w = np.random.default_rng(1).standard_normal((200, 24)).astype(np.float32) * 0.05  # K = 200: last block padded
    hess = 2 * x.T @ x / len(x)
    q = gptq_quantize(
        w,
        hess,
        bits,
        group,
        symmetric,
        act_order=groups == "act_order",
        block=64,
        static_groups=groups != "lazy",
        clip_search=groups == "clip",
    )
    rtn = quantize_blockwise(w, bits, group, symmetric)
    assert q.codes.shape == rtn.codes.shape and (q.codes.max() <= 2**bits - 1)
    if groups in ("static", "act_order"):  # static groups: RTN's scales/zero points, only the codes differ
        np.testing.assert_array_equal(q.scales, rtn.scales)
        np.testing.assert_array_equal(q.zero_points, rtn.zero_points)
    assert (q.codes[:, -1, 200 - (q.n_blocks - 1) * group :] == 0).all()  # padding codes are 0
    out_gptq = np.linalg.norm(x @ dequantize_blockwise(q) - x @ w)
    out_rtn = np.linalg.norm(x @ dequantize_blockwise(rtn) - x @ w)
    assert out_gptq < 0.8 * out_rtn, (out_gptq, out_rtn)
    error, error_rtn = hessian_errors(w, hess, dequantize_blockwise(q), dequantize_blockwise(rtn))
    assert error < error_rtn


@pytest.mark.parametrize("static_groups", [True, False])
def test_gptq_in_column_chunks_equals_one_chunk(monkeypatch, static_groups):
    """The output columns are independent: a wide weight (an LM head) is processed a chunk at a time."""
    x = correlated(k=96)
    w = np.random.default_rng(3).standard_normal((96, 40)).astype(np.float32)
    hess = 2 * x.T @ x / len(x)
    whole = gptq_quantize(w, hess, 4, 32, False, static_groups=static_groups, block=48)
    monkeypatch.setattr(gptq, "CHUNK", 16)
    chunked = gptq_quantize(w, hess, 4, 32, False, static_groups=static_groups, block=48)
    np.testing.assert_array_equal(chunked.codes, whole.codes)
    np.testing.assert_array_equal(chunked.scales, whole.scales)
    np.testing.assert_array_equal(chunked.zero_points, whole.zero_points)


@pytest.mark.parametrize("static_groups", [True, False])
def test_gptq_in_sub_blocks_equals_row_by_row_blocks(monkeypatch, static_groups):
    """Updating a block's rows a piece at a time (SUB_BLOCK) is the same arithmetic as row by row."""
    x = correlated(k=96)
    w = np.random.default_rng(4).standard_normal((96, 40)).astype(np.float32)
    hess = 2 * x.T @ x / len(x)
    pieces = gptq_quantize(w, hess, 4, 32, False, static_groups=static_groups, block=64)
    monkeypatch.setattr(gptq, "SUB_BLOCK", 64)
    whole = gptq_quantize(w, hess, 4, 32, False, static_groups=static_groups, block=64)
    np.testing.assert_array_equal(pieces.codes, whole.codes)
    np.testing.assert_array_equal(pieces.scales, whole.scales)


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
    nodes = [
        h.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        h.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        h.make_node("Add", ["q", "k"], ["s"]),
        h.make_node("MatMul", ["s", "wo"], ["y"], name="o_proj"),
    ]
    inits = {
        "wq": (rng.standard_normal((k, 32)) * 0.1).astype(np.float32),
        "wk": (rng.standard_normal((k, 32)) * 0.1).astype(np.float32),
        "wo": (rng.standard_normal((32, 16)) * 0.1).astype(np.float32),
    }
    return tiny.make_model(nodes, [("x", [4, k])], [("y", [4, 16])], inits, infer_shapes=True)


def calibration(k=96, n=8):
    x = correlated(rows=4 * n, k=k).astype(np.float32)
    return [{"x": x[i * 4 : (i + 1) * 4]} for i in range(n)]


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
    assert [x["node"] for x in details["layers"]] == ["q_proj", "k_proj", "o_proj"]
    assert details["hessian_inputs"] == 2  # q_proj and k_proj read the same x
    for layer in details["layers"]:
        assert layer["algorithm"] == "gptq" and layer["bits"] == 4 and layer["group_size"] == 32
        assert layer["relative_output_error"] <= layer["relative_output_error_rtn"]
    negative = [(s < 0).any() for s in tiny.weight_scales(gptq.model)]
    assert any(negative) == (fmt == "matmulnbits")  # symmetric: ONNX Runtime's signed scales, positive ones for QDQ


def test_gptq_without_calibration_names_the_option(tiny):
    with pytest.raises(OnnxcompError, match="calib"):
        onnxcomp.compress(tiny_linear(tiny), "w4a16-gptq", use_cache=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"damp": 1.5}, "damp must be a number in \\[0, 1\\), not 1.5"),
        ({"damp": True}, "damp must be"),
        ({"samples": 64}, "unknown option .samples."),
        ({"bits": 3}, "bits must be one of"),
        ({"algorithm": "awq"}, "must be 'gptq'"),
        ({"sequential": "yes"}, "sequential must be true or false, not 'yes'"),
        ({"static_groups": 1}, "static_groups must be true or false"),
        ({"clip_search": "on"}, "clip_search must be true or false"),
        ({"block": 0}, "block must be a positive integer, not 0"),
    ],
)
def test_gptq_bad_options(tiny, options, message):
    with pytest.raises(OnnxcompError, match=message) as info:
        onnxcomp.compress(
            tiny_linear(tiny), [("quantize_weight_only_gptq", options)], calibration=calibration(), use_cache=False
        )
    assert "\n" not in str(info.value) and "quantize_weight_only_gptq" in str(info.value)


# -- sequential mode ------------------------------------------------------------------------------
def two_layers(tiny, first="MatMul", k=64, mid=64, n=8):
    """x → linear 1 (MatMul, or Gemm with transB and a bias) → Tanh → MatMul 2 → y: layer 2's input
    depends on layer 1's weight."""
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((k, mid)) * 0.3).astype(np.float32)
    inits = {"w2": (rng.standard_normal((mid, n)) * 0.3).astype(np.float32)}
    if first == "Gemm":
        inits.update(w1=w1.T.copy(), b1=np.full(mid, 0.1, np.float32))
        layer1 = h.make_node("Gemm", ["x", "w1", "b1"], ["a"], name="fc1", transB=1)
    else:
        inits["w1"] = w1
        layer1 = h.make_node("MatMul", ["x", "w1"], ["a"], name="fc1")
    nodes = [
        layer1,
        h.make_node("Tanh", ["a"], ["t"], name="act"),
        h.make_node("MatMul", ["t", "w2"], ["y"], name="fc2"),
    ]
    return tiny.make_model(nodes, [("x", [4, k])], [("y", [4, n])], inits, infer_shapes=True), w1, inits


def hess(x):
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return 2 * x.T @ x / len(x)


@pytest.mark.parametrize("first", ["MatMul", "Gemm"])
def test_sequential_uses_the_quantized_earlier_layer_and_equals_a_hand_reference(tiny, first):
    model, w1, inits = two_layers(tiny, first)
    calib = calibration(k=64)
    x = np.concatenate([f["x"] for f in calib]).astype(np.float64)
    bias = inits.get("b1", np.zeros(w1.shape[1], np.float32))
    options = {"group_size": 32, "output_layer_bits": 0, "format": "qdq"}
    results = {
        seq: onnxcomp.compress(
            model, [("quantize_weight_only_gptq", {**options, "sequential": seq})], calibration=calib, use_cache=False
        )
        for seq in (True, False)
    }
    # by hand: layer 1 from x; layer 2 from the float model (one-shot) or from quantized layer 1 (sequential)
    q1 = dequantize_blockwise(gptq_quantize(w1, hess(x), 4, 32, True))
    for seq, layer1_weight in ((True, q1), (False, w1)):
        t = np.tanh(x @ layer1_weight + bias)
        q2 = dequantize_blockwise(gptq_quantize(inits["w2"], hess(t), 4, 32, True))
        expected = np.tanh(x @ q1 + bias) @ q2
        got = np.concatenate([tiny.run(results[seq].model, f)[0] for f in calib])
        np.testing.assert_allclose(got, expected, atol=2e-5)
        details = next(p for p in results[seq].report["passes"] if p["pass"] == "quantize_weight_only_gptq")["details"]
        assert details["sequential"] is seq and details["stages"] == 2
    seq_out = np.concatenate([tiny.run(results[True].model, f)[0] for f in calib])
    one_out = np.concatenate([tiny.run(results[False].model, f)[0] for f in calib])
    assert np.abs(seq_out - one_out).max() > 1e-3  # layer 2's codes differ
    ref = np.concatenate([tiny.run(model, f)[0] for f in calib])
    assert np.linalg.norm(seq_out - ref) < np.linalg.norm(one_out - ref)  # and compensate layer 1's error


class OnceReader:
    """A calibration reader that counts how often it is iterated."""

    def __init__(self, feeds):
        self.feeds, self.iterations = feeds, 0

    def __iter__(self):
        self.iterations += 1
        return iter(self.feeds)


def test_staged_hessians_run_each_node_once_from_the_cached_frontier(tiny):
    """Three stages (x; q+k's sum; o's output) in a graph with a side branch read at the end: the frontier
    carries the side branch across the cuts, every node runs at most once, nodes after the last stage
    input never run, and without replacements the Hessians equal one run of the whole model."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        h.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        h.make_node("Relu", ["x"], ["side"], name="side"),
        h.make_node("Add", ["q", "k"], ["s"], name="add"),
        h.make_node("MatMul", ["s", "wo"], ["o"], name="o_proj"),
        h.make_node("Sigmoid", ["o"], ["g"], name="gate"),
        h.make_node("MatMul", ["g", "wd"], ["d"], name="down"),
        h.make_node("ReduceSum", ["side"], ["r"], name="sum", keepdims=1),
        h.make_node("Add", ["d", "r"], ["y"], name="out"),
    ]
    inits = {
        "wq": rng.standard_normal((96, 32)).astype(np.float32),
        "wk": rng.standard_normal((96, 32)).astype(np.float32),
        "wo": rng.standard_normal((32, 16)).astype(np.float32),
        "wd": rng.standard_normal((16, 16)).astype(np.float32),
    }
    proto = tiny.make_model(nodes, [("x", [4, 96])], [("y", [4, 16])], inits, infer_shapes=True)
    model = ir.from_proto(proto)
    reader = OnceReader(calibration())
    staged = StagedHessians(model, ["x", "s", "g"], reader)
    assert staged.stages == [["x"], ["s"], ["g"]]
    got = {}
    for _ in staged.stages:
        names, hessians = staged.next_stage()
        got.update(hessians)
    assert reader.iterations == 1
    assert staged.frontier_sizes == [1, 2, 2]  # at the cuts: {x}; {s, side}; {g, side}
    assert staged.nodes_run == 6  # q, k, relu, add; o_proj, gate; never down/sum/out
    expected = collect(model, [GramRequest(n) for n in ("x", "s", "g")], calibration(), use_cache=False).grams
    for name in ("x", "s", "g"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5)
    with pytest.raises(OnnxcompError, match="no stage left"):
        staged.next_stage()


def test_staged_hessians_see_a_replaced_weight_only_in_its_own_node(tiny):
    """A weight read by a linear and by another node: the replacement changes the linear's read only."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 96)).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["a"], name="fc1"),
        h.make_node("ReduceSum", ["w"], ["wsum"], name="sum_w", keepdims=1),
        h.make_node("Add", ["x", "wsum"], ["b"], name="add_w"),
        h.make_node("Mul", ["a", "b"], ["m"], name="mul"),
        h.make_node("MatMul", ["m", "w2"], ["y"], name="fc2"),
    ]
    proto = tiny.make_model(
        nodes,
        [("x", [4, 96])],
        [("y", [4, 8])],
        {"w": w, "w2": rng.standard_normal((96, 8)).astype(np.float32)},
        infer_shapes=True,
    )
    model = ir.from_proto(proto)
    feeds = calibration()
    staged = StagedHessians(model, ["x", "m"], feeds)
    staged.next_stage()
    fc1 = next(n for n in model.graph if n.name == "fc1")
    replaced = np.round(w * 4) / 4
    staged.replace(fc1, 1, replaced)
    _, hessians = staged.next_stage()
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    expected = hess((x @ replaced) * (x + w.astype(np.float64).sum()))
    np.testing.assert_allclose(hessians["m"], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    unreplaced = hess((x @ w) * (x + w.astype(np.float64).sum()))
    assert np.abs(unreplaced - expected).max() > 1e-3 * np.abs(expected).max()
