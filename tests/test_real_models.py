"""Every pass on real models from `models/`: the digits CNN (trained on scikit-learn's digits, fast)
and all-MiniLM-L6-v2 (slow). Numerics are checked against the unmodified model in ONNX Runtime."""

import collections
import hashlib

import numpy as np
import onnx
import pytest
from onnx import helper as h
from onnx import numpy_helper

import onnxcomp
from onnxcomp.runtime import runner


def ops(model):
    return collections.Counter(n.op_type for n in model.graph.node)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def max_rel_diff(tiny, ref_model, model, feeds):
    worst = 0.0
    for feed in feeds:
        ref, got = tiny.run(ref_model, feed)[0], tiny.run(model, feed)[0]
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    return worst


# -- digits: quantize_qdq -------------------------------------------------------------------------------
def test_digits_int8_accuracy(tiny, digits, digits_path, digits_int8):
    metric = digits.compare(
        runner(tiny.session(digits_path, optimize=True)), runner(tiny.session(digits_int8.model, optimize=True))
    )
    assert metric["accuracy_reference"] > 0.95, "the fp32 model itself must be good for the check to mean anything"
    assert metric["accuracy_drop_points"] <= 0.5, metric
    details = {e["pass"]: e.get("details") for e in digits_int8.report["passes"]}["quantize_qdq"]
    assert details["quantized_nodes"] == 4  # 2 Conv + 2 Gemm
    assert {layer["op"] for layer in details["layers"]} == {"Conv", "Gemm"}


def test_digits_int8_weights_are_int8_and_smaller(digits_path, digits_int8):
    fp32 = onnx.load(str(digits_path))
    q = digits_int8.model
    weights = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq_weights = [
        n
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) is not None and weights[n.input[0]].ndim >= 2
    ]
    assert len(dq_weights) == 4 and all(weights[n.input[0]].dtype == np.uint8 for n in dq_weights)  # int8 codes + 128
    assert not any(
        numpy_helper.to_array(i).dtype == np.float32 and numpy_helper.to_array(i).ndim >= 2 for i in q.graph.initializer
    )
    assert q.ByteSize() < 0.4 * fp32.ByteSize()


def test_digits_int8_fuses_into_integer_kernels(tiny, digits_int8, tmp_path):
    path = tmp_path / "digits.int8.onnx"
    digits_int8.save(path)
    tiny.session(path, optimize=True, optimized_path=tmp_path / "opt.onnx")
    fused = ops(onnx.load(str(tmp_path / "opt.onnx")))
    assert fused["QLinearConv"] == 2 and fused["Conv"] == 0, fused
    assert fused["QGemm"] == 2 and fused["Gemm"] == 0, fused


def test_digits_deterministic_and_input_untouched(digits, digits_path, digits_int8, tmp_path):
    before = sha256(digits_path)
    first = onnxcomp.compress(
        str(digits_path), "int8", calibration=digits.calibration_feeds(), output=tmp_path / "a.onnx"
    )
    second = onnxcomp.compress(
        str(digits_path), "int8", calibration=digits.calibration_feeds(), output=tmp_path / "b.onnx", use_cache=False
    )
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert first.model.SerializeToString(deterministic=True) == digits_int8.model.SerializeToString(deterministic=True)
    assert second.model == first.model
    assert sha256(digits_path) == before


def test_digits_verify_report(digits, digits_path):
    result = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds(), verify=True)
    entries = result.report["passes"]
    assert [e["pass"] for e in entries] == [n for n, _ in onnxcomp.passes.recipes.load_recipe("int8")]
    for entry in entries:
        dev = entry["deviation"]
        assert set(dev) == {"max_abs", "rel_l2", "cosine"} and all(np.isfinite(v) for v in dev.values())
        if entry["pass"] in ("fold_constants", "simplify", "fold_batchnorm", "calibrate"):
            assert dev["rel_l2"] < 1e-5, entry
    quant = [e for e in entries if e["pass"] == "quantize_qdq"][0]["deviation"]
    assert 0 < quant["rel_l2"] < 0.05 and quant["cosine"] > 0.999


# -- digits: canonicalization passes on the unoptimized export --------------------------------------------
def test_digits_fold_batchnorm(tiny, digits, digits_raw_path):
    raw = onnx.load(str(digits_raw_path))
    assert ops(raw)["BatchNormalization"] == 2
    result = onnxcomp.compress(raw, [("fold_batchnorm", {})])
    assert ops(result.model)["BatchNormalization"] == 0
    assert result.report["passes"][0]["details"] == {"folded": 2}
    feeds = digits.evaluation_feeds()[:3]
    assert max_rel_diff(tiny, raw, result.model, feeds) < 1e-5
    metric = digits.compare(runner(tiny.session(raw)), runner(tiny.session(result.model)))
    assert metric["accuracy_drop_points"] == 0


def test_digits_canonicalize(tiny, digits, digits_raw_path):
    raw = onnx.load(str(digits_raw_path))
    result = onnxcomp.compress(raw, "canonicalize")
    after = ops(result.model)
    assert after["BatchNormalization"] == 0 and after["Identity"] == 0
    assert sum(after.values()) < sum(ops(raw).values())
    assert after["Conv"] == 2 and after["Gemm"] == 2
    assert max_rel_diff(tiny, raw, result.model, digits.evaluation_feeds()[:3]) < 1e-5


def test_digits_int8_exclude_by_op_type_on_unoptimized_export(tiny, digits, digits_raw_path):
    raw = onnx.load(str(digits_raw_path))
    result = onnxcomp.compress(
        raw, "int8", calibration=digits.calibration_feeds(), options={"quantize_qdq": {"exclude": ["Gemm"]}}
    )
    details = [e for e in result.report["passes"] if e["pass"] == "quantize_qdq"][0]["details"]
    assert {layer["op"] for layer in details["layers"]} == {"Conv"} and len(details["excluded"]) == 2
    metric = digits.compare(runner(tiny.session(raw)), runner(tiny.session(result.model)))
    assert metric["accuracy_drop_points"] <= 0.5, metric


def test_digits_int8_exclude_by_input_node_name(digits, digits_raw_path):
    raw = onnx.load(str(digits_raw_path))
    second_conv = [n.name for n in raw.graph.node if n.op_type == "Conv"][1]
    result = onnxcomp.compress(
        raw, "int8", calibration=digits.calibration_feeds(), options={"quantize_qdq": {"exclude": [second_conv]}}
    )
    details = [e for e in result.report["passes"] if e["pass"] == "quantize_qdq"][0]["details"]
    assert details["excluded"] == [second_conv]


def test_digits_fold_constants(tiny, digits, digits_path):
    """Constant subgraphs planted in the real model (W = Transpose(Wt), b = (b0 + 0.5) · 2) are folded."""
    model = onnx.load(str(digits_path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][0]
    inits = {i.name: i for i in model.graph.initializer}
    w, b = numpy_helper.to_array(inits[gemm.input[1]]), numpy_helper.to_array(inits[gemm.input[2]])
    model.graph.initializer.remove(inits[gemm.input[1]])
    model.graph.initializer.remove(inits[gemm.input[2]])
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(w.T), "planted_wt"),
            numpy_helper.from_array(b / 2 - 0.5, "planted_b0"),
            numpy_helper.from_array(np.array(0.5, np.float32), "planted_half"),
            numpy_helper.from_array(np.array(2.0, np.float32), "planted_two"),
        ]
    )
    planted = [
        h.make_node("Transpose", ["planted_wt"], [gemm.input[1]], perm=[1, 0], name="planted_transpose"),
        h.make_node("Add", ["planted_b0", "planted_half"], ["planted_b1"], name="planted_add"),
        h.make_node("Mul", ["planted_b1", "planted_two"], [gemm.input[2]], name="planted_mul"),
    ]
    for i, node in enumerate(planted):
        model.graph.node.insert(i, node)
    onnx.checker.check_model(model)
    result = onnxcomp.compress(model, [("fold_constants", {}), ("remove_unused", {})])
    assert ops(result.model) == ops(onnx.load(str(digits_path)))
    assert result.report["passes"][0]["modified"] is True
    assert max_rel_diff(tiny, model, result.model, digits.evaluation_feeds()[:2]) < 1e-6


def test_digits_large_constant_weight_subgraph_is_folded_and_quantized(digits, digits_path):
    model = onnx.load(str(digits_path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][0]
    weight = {i.name: i for i in model.graph.initializer}[gemm.input[1]]
    w = numpy_helper.to_array(weight)
    assert w.size > 8192
    model.graph.initializer.remove(weight)
    model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float16), "planted_w16"))
    model.graph.node.insert(
        0, h.make_node("Cast", ["planted_w16"], [gemm.input[1]], to=onnx.TensorProto.FLOAT, name="planted_cast")
    )
    onnx.checker.check_model(model)
    result = onnxcomp.compress(model, "int8", calibration=digits.calibration_feeds())
    assert ops(result.model)["Cast"] == 0
    details = [e for e in result.report["passes"] if e["pass"] == "quantize_qdq"][0]["details"]
    assert details["quantized_nodes"] == 4


def test_digits_simplify(tiny, digits, digits_path):
    """Redundancies planted after the first Relu of the real model are removed."""
    model = onnx.load(str(digits_path))
    relu = [n for n in model.graph.node if n.op_type == "Relu"][0]
    out = relu.output[0]
    relu.output[0] = "planted_r0"
    planted = [
        h.make_node("Relu", ["planted_r0"], ["planted_r1"], name="planted_relu"),
        h.make_node("Transpose", ["planted_r1"], ["planted_t1"], perm=[0, 2, 3, 1], name="planted_t1"),
        h.make_node("Transpose", ["planted_t1"], [out], perm=[0, 3, 1, 2], name="planted_t2"),
    ]
    index = list(model.graph.node).index(relu)
    for i, node in enumerate(planted):
        model.graph.node.insert(index + 1 + i, node)
    onnx.checker.check_model(model)
    result = onnxcomp.compress(model, [("simplify", {})])
    after = ops(result.model)
    assert after["Transpose"] == 0 and after["Relu"] == 3, after
    assert max_rel_diff(tiny, model, result.model, digits.evaluation_feeds()[:2]) == 0.0


def test_digits_remove_unused(tiny, digits, digits_path):
    """A dead branch planted in the real model (an extra Conv nobody reads) is removed."""
    model = onnx.load(str(digits_path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][0]
    model.graph.node.insert(
        1, h.make_node("Conv", list(conv.input), ["planted_dead"], name="planted_dead_conv", pads=[1, 1, 1, 1])
    )
    model.graph.node.insert(2, h.make_node("Sigmoid", ["planted_dead"], ["planted_dead2"], name="planted_dead_sigmoid"))
    onnx.checker.check_model(model)
    result = onnxcomp.compress(model, [("remove_unused", {})])
    assert ops(result.model) == ops(onnx.load(str(digits_path)))
    assert result.report["passes"][0]["nodes_removed"] == {"Conv": 1, "Sigmoid": 1}
    assert max_rel_diff(tiny, model, result.model, digits.evaluation_feeds()[:2]) == 0.0


# -- MiniLM (slow) ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    from onnxcomp import models

    return models.get("minilm"), models.onnx_path("minilm")


@pytest.mark.slow
def test_minilm_int8_percentile(tiny, minilm, tmp_path):
    module, path = minilm
    before = sha256(path)
    result = onnxcomp.compress(
        str(path), "int8", calibration=module.calibration_feeds(), output=tmp_path / "m.int8.onnx"
    )
    assert result.report["recipe"][-3] == {"pass": "quantize_qdq"}  # default method: percentile
    metric = module.compare(
        runner(tiny.session(path, optimize=True)), runner(tiny.session(tmp_path / "m.int8.onnx", optimize=True))
    )
    # measured 0.9935 / 0.902 (256 evaluation sentences); word-embedding table in int8 too
    assert result.report["output_bytes"] < 0.3 * path.stat().st_size
    assert metric["mean_cosine"] >= 0.99, metric
    assert metric["nn_agreement"] >= 0.9, metric
    details = [e for e in result.report["passes"] if e["pass"] == "quantize_qdq"][0]["details"]
    assert details["quantized_nodes"] == 36  # 6 layers × (q, k, v, out, ffn up, ffn down)
    tiny.session(tmp_path / "m.int8.onnx", optimize=True, optimized_path=tmp_path / "opt.onnx")
    assert ops(onnx.load(str(tmp_path / "opt.onnx")))["MatMulIntegerToFloat"] == 36
    assert sha256(path) == before


@pytest.mark.slow
def test_minilm_canonicalize_keeps_outputs(tiny, minilm):
    module, path = minilm
    model = onnx.load(str(path))
    result = onnxcomp.compress(model, "canonicalize")
    feeds = module.evaluation_feeds(32)
    assert max_rel_diff(tiny, model, result.model, feeds) < 1e-5
