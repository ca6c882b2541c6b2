"""Targets and the conformance check on tiny graphs: each rule names the offending node, compress
adapts its passes to the target and refuses what the target cannot honour before any work."""

import json
from dataclasses import replace

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.emit import FORMATS, ORT_CPU, PORTABLE, TARGETS, TENSORRT, target_named
from onnxcomp.emit.conformance import check_conformance
from onnxcomp.errors import OnnxcompError
from onnxcomp.precision import PrecisionPlan, Scheme
from tests.passes.test_weight_only import tied_lm

RNG = np.random.default_rng(0)


def conv_residual(tiny):
    """x → Conv → Relu → Conv → Add(·, x) → MatMul(w): a residual block and a linear."""
    w1 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    b1 = RNG.standard_normal(4).astype(np.float32) * 0.1
    wm = RNG.standard_normal((8, 5)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Add", ["c2", "x"], ["s"], name="residual"),
        h.make_node("MatMul", ["s", "wm"], ["y"], name="head"),
    ]
    return tiny.make_model(
        nodes, [("x", [2, 4, 6, 8])], [("y", [2, 4, 6, 5])], {"w1": w1, "w2": w2, "b1": b1, "wm": wm}, infer_shapes=True
    )


def feeds(n=4):
    return [{"x": RNG.standard_normal((2, 4, 6, 8)).astype(np.float32)} for _ in range(n)]


def linear(tiny, k=64, n=16):
    w = RNG.standard_normal((k, n)).astype(np.float32)
    return tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [2, k])], [("y", [2, n])], {"w": w}
    )


def test_registry_names_and_unknown_target():
    assert list(TARGETS) == ["ort-cpu", "ort-cuda", "tensorrt", "portable"]
    assert target_named(None) is ORT_CPU
    for target in TARGETS.values():
        assert set(target.weight_only_formats) <= set(FORMATS)
    with pytest.raises(OnnxcompError, match="unknown target 'trt'.*tensorrt"):
        target_named("trt")


def test_portable_refuses_the_contrib_domain_naming_the_node(tiny):
    model = ir.from_proto(linear(tiny))
    result = check_conformance(model, PORTABLE)
    assert result.ok, result.violations
    node = next(iter(model.graph))
    node.domain, node.op_type, node.name = "com.microsoft", "MatMulNBits", "packed_mm"
    result = check_conformance(model, PORTABLE)
    assert not result.ok and result.violations[0].node == "packed_mm"
    assert "com.microsoft" in result.violations[0].reason
    assert check_conformance(model, ORT_CPU).violations[0].reason.startswith("block size 0")


def qdq_model(tiny, dtype, zero_point, block=None, scale=0.1):
    """x → Q/DQ(dtype, zero point) → MatMul(DQ(int codes)) with the given activation parameters."""
    numpy_type = {"int8": np.int8, "uint8": np.uint8}[dtype]
    codes = RNG.integers(-7, 7, (64, 16))
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        numpy_helper.from_array(np.array(zero_point, numpy_type), "z"),
    ]
    if block:
        w = onnx.helper.make_tensor("wq", TensorProto.INT4, [64, 16], codes.astype(ml_dtypes.int4).flatten().tolist())
        ws = np.full((64 // block, 16), 0.02, np.float32)
        dq_w = h.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], name="w_dq", axis=0, block_size=block)
    else:
        w = numpy_helper.from_array(codes.astype(np.int8), "wq")
        ws = np.full(16, 0.02, np.float32)
        dq_w = h.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], name="w_dq", axis=1)
    inits += [w, numpy_helper.from_array(ws, "ws")]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_q"),
        h.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_dq"),
        dq_w,
        h.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
    ]
    return ir.from_proto(matmul_graph(nodes, inits))


def matmul_graph(nodes, inits, extra_opsets=()) -> onnx.ModelProto:
    """x [2, 64] → `nodes` → y [2, 16] at opset 21 (and `extra_opsets`), checked."""
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
        inits,
    )
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 21), *extra_opsets], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize(
    "dtype, zero_point, block, scale, first",
    [
        ("int8", 0, None, 0.1, None),
        ("int8", 0, 64, 0.1, None),
        ("uint8", 128, None, 0.1, "x_q: activation dtype uint8 not accepted"),
        ("int8", 3, None, 0.1, "x_q: target 'tensorrt' is symmetric only"),
        ("int8", 0, 32, 0.1, "w_dq: block size 32 not accepted"),
        ("int8", 0, None, -0.1, "x_q: target 'tensorrt' needs strictly positive scales"),
    ],
)
def test_tensorrt_rules(tiny, dtype, zero_point, block, scale, first):
    result = check_conformance(qdq_model(tiny, dtype, zero_point, block, scale), TENSORRT)
    if first is None:
        assert result.ok, result.violations
    else:
        node, reason = first.split(": ", 1)
        assert result.violations[0].node == node and result.violations[0].reason.startswith(reason)
        # the same graph is fine on ONNX Runtime CPU unless the rule is one ORT shares
        assert check_conformance(qdq_model(tiny, dtype, zero_point, block, scale), ORT_CPU).ok or block == 32


def test_tensorrt_blocks_only_int4_on_the_k_axis(tiny):
    model = qdq_model(tiny, "int8", 0, 64)
    dq = next(n for n in model.graph if n.name == "w_dq")
    dq.attributes["axis"] = ir.AttrInt64("axis", 1)
    assert "K axis" in check_conformance(model, TENSORRT).violations[0].reason


def test_compress_for_tensorrt_places_symmetric_qdq_and_the_residual(tiny):
    proto = conv_residual(tiny)
    data = feeds()
    trt = onnxcomp.compress(proto, "int8", data, target="tensorrt", use_cache=False)
    cpu = onnxcomp.compress(proto, "int8", data, use_cache=False)
    assert trt.report["target"] == "tensorrt" and trt.report["conformance"]["conforms"]
    assert cpu.report["conformance"]["conforms"] and cpu.report["target"] == "ort-cpu"
    model = trt.model
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    for q in quantize:  # int8, zero point 0, per tensor
        zero_point = tiny.initializer(model, q.input[2])
        assert zero_point.dtype == np.int8 and zero_point.size == 1 and int(zero_point) == 0
    add = tiny.node_named(model, "residual")
    assert add.input[0] == "c2"  # the Conv output reaches the Add unquantized (Conv+Add fuses) ...
    assert tiny.producer(model, add.input[1]).op_type == "DequantizeLinear"  # ... the residual is Q/DQ'd
    conv1 = tiny.node_named(model, "conv1")
    assert conv1.input[2] == "b1"  # bias stays float: TensorRT dequantizes int8/int4 only
    # ORT CPU's output keeps its uint8 activations and int32 biases
    assert tiny.initializer(cpu.model, "x_zero_point").dtype == np.uint8
    assert tiny.producer(cpu.model, tiny.node_named(cpu.model, "conv1").input[2]).op_type == "DequantizeLinear"
    # the TensorRT-placed model runs in ORT CPU close to the float one
    x = data[0]
    ref, got = tiny.run(proto, x)[0], tiny.run(model, x)[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_weight_only_follows_the_target_format(tiny):
    proto = linear(tiny)
    for target, ops in {
        "ort-cpu": ["MatMulNBits"],
        "tensorrt": ["DequantizeLinear", "MatMul"],
        "portable": ["DequantizeLinear", "MatMul"],
    }.items():
        result = onnxcomp.compress(proto, "w4a16-rtn", target=target)
        assert tiny.op_types(result.model) == ops, target
        assert result.report["conformance"]["conforms"]
    head = onnxcomp.compress(proto, "w4a16-rtn", target="tensorrt").model.graph.node[0]
    assert tiny.attr(head, "axis") == 1 and tiny.attr(head, "block_size") is None  # an output layer: int8 per channel
    options = {"quantize_weight_only": {"output_layer_bits": 0}}
    trt = onnxcomp.compress(proto, "w4a16-rtn", target="tensorrt", options=options).model
    dq = trt.graph.node[0]
    assert tiny.attr(dq, "axis") == 0 and tiny.attr(dq, "block_size") == 64  # K = 64: whole blocks
    assert len(dq.input) == 2  # no zero point: symmetric


@pytest.mark.parametrize(
    "recipe, target, options, message",
    [
        ("w4a16-rtn", "tensorrt", {"quantize_weight_only": {"symmetric": False}}, "symmetric blocks only"),
        ("w4a16-rtn", "portable", {"quantize_weight_only": {"format": "matmulnbits"}}, "for target 'portable'"),
        ("w4a16-rtn", "tensorrt", {"quantize_weight_only": {"group_size": 32}}, "group_size 32 not accepted"),
        ("int8", "tensorrt", {"quantize_qdq": {"activation_dtype": "uint8"}}, "must be int8 for target 'tensorrt'"),
        ("int8", "nowhere", {}, "unknown target 'nowhere'"),
    ],
)
def test_refused_before_any_work(tiny, tmp_path, recipe, target, options, message):
    out = tmp_path / "out.onnx"
    with pytest.raises(OnnxcompError, match=message):
        onnxcomp.compress(linear(tiny), recipe, target=target, options=options, output=out)
    assert not out.exists()


def test_recipe_file_names_its_target(tiny, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "w4a16-rtn"\ntarget = "portable"\n')
    result = onnxcomp.compress(linear(tiny), recipe)
    assert result.report["target"] == "portable" and "MatMulNBits" not in tiny.op_types(result.model)


def test_cli_check_and_compress_target(tiny, tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(linear(tiny), source)
    runner = CliRunner()
    out = tmp_path / "m.int4.onnx"
    result = runner.invoke(cli, ["compress", str(source), "-o", str(out), "--recipe", "w4a16-rtn"])
    assert result.exit_code == 0, result.output
    assert "target ort-cpu: conforms" in result.output
    ok = runner.invoke(cli, ["check", str(out), "--target", "ort-cpu"])
    assert ok.exit_code == 0 and "conforms to target ort-cpu" in ok.output
    bad = runner.invoke(cli, ["check", str(out), "--target", "portable", "--json"])
    payload = json.loads(bad.output)
    assert bad.exit_code == 1 and not payload["conforms"] and payload["violations"][0]["node"] == "mm"
    portable = tmp_path / "m.portable.onnx"
    result = runner.invoke(
        cli, ["compress", str(source), "-o", str(portable), "--recipe", "w4a16-rtn", "--target", "portable"]
    )
    assert result.exit_code == 0 and runner.invoke(cli, ["check", str(portable), "--target", "portable"]).exit_code == 0
    unknown = runner.invoke(cli, ["compress", str(source), "-o", str(tmp_path / "x.onnx"), "--target", "trt"])
    assert unknown.exit_code == 2 and "unknown target 'trt'" in unknown.output
    assert not (tmp_path / "x.onnx").exists()


def test_input_with_ops_the_target_does_not_run_is_refused_first(tiny, tmp_path):
    proto = linear(tiny)
    proto.graph.node[0].domain = "com.microsoft"
    proto.opset_import.append(h.make_opsetid("com.microsoft", 1))
    proto.graph.node[0].op_type = "FusedMatMul"
    with pytest.raises(
        OnnxcompError, match="node 'mm' \\(com.microsoft::FusedMatMul\\) is not an op target 'portable'"
    ):
        onnxcomp.compress(proto, "canonicalize", target="portable", output=tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_tensorrt_keeps_matmuls_on_one_sided_inputs_float(tiny):
    w = RNG.standard_normal((8, 4)).astype(np.float32)
    proto = tiny.make_model(
        [h.make_node("Relu", ["x"], ["r"], name="relu"), h.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
        [("x", [3, 8])],
        [("y", [3, 4])],
        {"w": w},
        infer_shapes=True,
    )
    data = [{"x": RNG.standard_normal((3, 8)).astype(np.float32)} for _ in range(4)]
    trt = onnxcomp.compress(proto, "int8", data, target="tensorrt", use_cache=False)
    entry = next(p for p in trt.report["passes"] if p["pass"] == "quantize_qdq")
    assert entry["details"]["float_one_sided"] == ["mm"] and "QuantizeLinear" not in tiny.op_types(trt.model)
    # the activation stays float, the weight is int8 per channel over N (TensorRT's int8 weight-only form)
    assert tiny.op_types(trt.model) == ["Relu", "DequantizeLinear", "MatMul"] and trt.report["conformance"]["conforms"]
    dq = tiny.producer(trt.model, tiny.node_named(trt.model, "mm").input[1])
    assert tiny.initializer(trt.model, dq.input[0]).dtype == np.int8 and tiny.attr(dq, "axis") == 1
    x = data[0]
    ref, got = tiny.run(proto, x)[0], tiny.run(trt.model, x)[0]
    assert np.abs(got - ref).max() <= np.abs(w).max() / 127 * np.abs(np.maximum(x["x"], 0)).sum(axis=1).max()
    float_weights = onnxcomp.compress(
        proto, "int8", data, target="tensorrt", use_cache=False, options={"quantize_qdq": {"one_sided_weights": False}}
    )
    assert tiny.op_types(float_weights.model) == ["Relu", "MatMul"]
    forced = onnxcomp.compress(
        proto, "int8", data, target="tensorrt", use_cache=False, options={"quantize_qdq": {"one_sided_float": False}}
    )
    assert "QuantizeLinear" in tiny.op_types(forced.model) and forced.report["conformance"]["conforms"]
    assert "QuantizeLinear" in tiny.op_types(onnxcomp.compress(proto, "int8", data, use_cache=False).model)


def test_whole_blocks_on_portable_and_tensorrt(tiny):
    proto = linear(tiny, k=96)  # 96 = 3 × 32: group 128 has a partial block, 32 divides it
    result = onnxcomp.compress(proto, "w4a16-rtn", target="portable")
    assert tiny.attr(result.model.graph.node[0], "block_size") == 32 and result.report["conformance"]["conforms"]
    # TensorRT blocks int4 by 64 or 128 only: no block divides 96, so the layer is int8 per channel
    trt = onnxcomp.compress(proto, "w4a16-rtn", target="tensorrt")
    dq = trt.model.graph.node[0]
    assert tiny.initializer(trt.model, dq.input[0]).dtype == np.int8 and tiny.attr(dq, "block_size") is None
    assert trt.report["conformance"]["conforms"]
    cpu = onnxcomp.compress(proto, "w4a16-rtn", options={"quantize_weight_only": {"format": "qdq"}})
    assert tiny.attr(cpu.model.graph.node[0], "block_size") == 128  # ORT reads the partial block: unchanged
    assert (
        "not a multiple of block size 128" in check_conformance(ir.from_proto(cpu.model), PORTABLE).violations[0].reason
    )
    odd = onnxcomp.compress(linear(tiny, k=40), "w4a16-rtn", target="portable")  # no accepted block divides 40
    assert tiny.op_types(odd.model) == ["MatMul"]
    # a hand-written plan's g32 on tensorrt (blocks of 64/128 only): no accepted block ≤ 32, int8 per channel
    plan = PrecisionPlan(Scheme("blockwise", 4, 32, True))
    g32 = onnxcomp.compress(linear(tiny, k=128), "w4a16-rtn", target="tensorrt", precision_plan=plan)
    dq = g32.model.graph.node[0]
    assert tiny.initializer(g32.model, dq.input[0]).dtype == np.int8 and tiny.attr(dq, "block_size") is None
    assert g32.report["conformance"]["conforms"]


def test_tensorrt_int8_weight_only_is_per_channel_over_n(tiny):
    proto = linear(tiny, k=64, n=16)
    result = onnxcomp.compress(proto, "w8a16", target="tensorrt")
    assert tiny.op_types(result.model) == ["DequantizeLinear", "MatMul"] and result.report["conformance"]["conforms"]
    dq = result.model.graph.node[0]
    codes, scales = tiny.initializer(result.model, dq.input[0]), tiny.initializer(result.model, dq.input[1])
    assert codes.dtype == np.int8 and codes.shape == (64, 16) and scales.shape == (16,) and len(dq.input) == 2
    assert tiny.attr(dq, "axis") == 1 and tiny.attr(dq, "block_size") is None
    weight = tiny.initializer(proto, "w")
    assert np.abs(codes * scales - weight).max() <= np.abs(weight).max(axis=0).max() / 127 / 2 + 1e-6
    layer = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]["layers"][0]
    assert layer["per_channel"] and layer["group_size"] == 64
    # ORT CPU keeps int8 blocks (MatMulNBits), as before
    assert tiny.op_types(onnxcomp.compress(proto, "w8a16").model) == ["MatMulNBits"]


def test_weight_only_rules_of_the_conformance_check(tiny):
    model = qdq_model(tiny, "int8", 0)
    x_dq = next(n for n in model.graph if n.name == "x_dq")
    mm = next(n for n in model.graph if n.name == "mm")
    mm.replace_input_with(0, x_dq.inputs[0].producer().inputs[0])  # the activation float: weight-only
    assert check_conformance(model, TENSORRT).ok
    no_int8_woq = replace(TENSORRT, weight_only_bits=(4,))
    assert "int8 weight-only layers" in check_conformance(model, no_int8_woq).violations[0].reason
    dq = next(n for n in model.graph if n.name == "w_dq")
    dq.attributes["axis"] = ir.AttrInt64("axis", 0)  # scales per row of K: not per output channel
    dq.inputs[1].const_value = ir.tensor(np.full(64, 0.02, np.float32))
    assert "run over N (axis 1)" in check_conformance(model, TENSORRT).violations[0].reason
    int4 = qdq_model(tiny, "int8", 0, 64)
    w_dq = next(n for n in int4.graph if n.name == "w_dq")
    del w_dq.attributes["block_size"]
    w_dq.attributes["axis"] = ir.AttrInt64("axis", 1)
    w_dq.inputs[1].const_value = ir.tensor(np.full(16, 0.02, np.float32))
    reason = check_conformance(int4, TENSORRT).violations[0].reason
    assert reason.startswith("int4 weights need block scales on target 'tensorrt'")
    assert check_conformance(int4, ORT_CPU).ok


def test_tensorrt_lm_head_int8_per_channel_shares_the_tied_table(tiny):
    proto, table = tied_lm(tiny, hidden=64)  # K = 64: one whole TensorRT int4 block
    result = onnxcomp.compress(proto, "w4a16-rtn", target="tensorrt", use_cache=False)
    model = result.model
    assert result.report["conformance"]["conforms"]
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["layers"][0]["bits"] == 8 and details["layers"][0]["per_channel"]
    assert details["tied_tables"][0]["shared"] and details["tied_tables"][0]["per_channel"]
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2]
    assert floats == []  # the table is stored once, as the head's int8 codes
    ids = np.array([[0, 7, 99, 3, 3], [50, 1, 2, 98, 0]])
    emb, logits = tiny.run(model, {"ids": ids})
    step = np.abs(table).max(axis=1) / 127  # per row of the table = per output channel of the head
    assert np.all(np.abs(emb - table[ids]) <= step[ids][..., None] / 2 + 1e-6)
    ref_logits = tiny.run(proto, {"ids": ids})[1]
    assert np.abs(logits - ref_logits).max() < 0.02 * np.abs(ref_logits).max()
    # a target that declares no int8 weight-only keeps the old rule: the head at the layers' 4 bits
    no_int8_woq = replace(TENSORRT, weight_only_bits=(4,))
    old = onnxcomp.compress(proto, "w4a16-rtn", target=no_int8_woq, use_cache=False)
    layer = next(p for p in old.report["passes"] if p["pass"] == "quantize_weight_only")["details"]["layers"][0]
    assert layer["bits"] == 4 and "per_channel" not in layer


def test_shared_table_reads_the_same_in_openvino(tiny):
    """OpenVINO 2026.4 misreads a column Gather on a per-channel DequantizeLinear; the row Gather on
    its transpose (what the emitter writes) reads the same values as ONNX Runtime."""
    ov = pytest.importorskip("openvino")
    proto, _ = tied_lm(tiny, hidden=64)
    model = onnxcomp.compress(proto, "w4a16-rtn", target="tensorrt", use_cache=False).model
    ids = np.array([[0, 7, 99, 3, 3], [50, 1, 2, 98, 0]])
    want = tiny.run(model, {"ids": ids})
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    result = compiled({"ids": ids})
    for expected, port in zip(want, compiled.outputs):
        np.testing.assert_allclose(np.asarray(result[port]), expected, rtol=1e-5, atol=1e-5)


def test_float_weight_quantized_at_build_time_may_be_per_channel(tiny):
    """TensorRT quantizes a float weight behind a QuantizeLinear when it builds (ModelOpt's form):
    per-channel scales are fine there; an activation's QuantizeLinear stays per tensor."""
    w = RNG.standard_normal((64, 16)).astype(np.float32)
    ws, zero = np.abs(w).max(axis=0) / 127, np.zeros(16, np.int8)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(ws.astype(np.float32), "ws"),
        numpy_helper.from_array(zero, "wz"),
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_q"),
        h.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_dq"),
        h.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="w_q", axis=1),
        h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="w_dq", axis=1),
        h.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
    ]
    proto = matmul_graph(nodes, inits)
    assert check_conformance(ir.from_proto(proto), TENSORRT).ok
    proto.graph.node[0].input[1] = "ws"  # the activation's QuantizeLinear with per-channel scales
    proto.graph.node[0].input[2] = "wz"
    first = check_conformance(ir.from_proto(proto), TENSORRT).violations[0]
    assert first.node == "x_q" and "per tensor" in first.reason


def test_tensorrt_embedding_table_is_dequantized_then_gathered(tiny):
    """TensorRT's Gather and Cast take no INT8 (quantized types go through DequantizeLinear only):
    the int8 table is dequantized per row, then gathered; the same products as ort-cpu's form."""
    table = (RNG.standard_normal((100, 32)) * RNG.uniform(0.01, 3, (100, 1))).astype(np.float32)
    gather = h.make_node("Gather", ["table", "ids"], ["y"], axis=0, name="embed")
    ids_info = h.make_tensor_value_info("ids", TensorProto.INT64, ["n", "s"])
    model = tiny.make_model([gather], [ids_info], [("y", ["n", "s", 32])], {"table": table}, opset=21)
    recipe = [("quantize_embedding", {"min_elements": 1000}), ("remove_unused", {})]
    trt = onnxcomp.compress(model, recipe, target="tensorrt").model
    cpu = onnxcomp.compress(model, recipe).model
    assert tiny.op_types(trt) == ["DequantizeLinear", "Gather"]
    assert "Cast" in tiny.op_types(cpu)
    ids = RNG.integers(0, 100, (3, 7)).astype(np.int64)
    np.testing.assert_array_equal(tiny.run(trt, {"ids": ids})[0], tiny.run(cpu, {"ids": ids})[0])
    first = check_conformance(ir.from_proto(cpu), TENSORRT).violations[0]  # ort-cpu's int8 Gather + Cast
    assert first.op == "ai.onnx::Gather" and "reads int8 tensor" in first.reason
    assert check_conformance(ir.from_proto(cpu), PORTABLE).ok
    image = h.make_tensor_value_info("image", TensorProto.UINT8, [2, 64])  # uint8 network inputs are fine
    cast = h.make_node("Cast", ["image"], ["y"], name="to_float", to=TensorProto.FLOAT)
    assert check_conformance(ir.from_proto(tiny.make_model([cast], [image], [("y", [2, 64])], opset=21)), TENSORRT).ok


def test_tensorrt_refuses_standard_ops_its_parser_does_not_run(tiny):
    """DynamicQuantizeLinear, MatMulInteger, QLinear* are standard ONNX that TensorRT marks unsupported."""
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dyn"),
        h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_dq"),
        h.make_node("MatMul", ["xd", "w"], ["y"], name="mm"),
    ]
    proto = matmul_graph(nodes, [numpy_helper.from_array(RNG.standard_normal((64, 16)).astype(np.float32), "w")])
    first = check_conformance(ir.from_proto(proto), TENSORRT).violations[0]
    assert first.node == "dyn" and "not among the ops" in first.reason
    assert check_conformance(ir.from_proto(proto), PORTABLE).ok
    model = qdq_model(tiny, "int8", 0)
    x_dq = next(n for n in model.graph if n.name == "x_dq")
    assert check_conformance(model, TENSORRT).ok
    runtime_scale = ir.node("Identity", [x_dq.inputs[1]], name="scale_at_run_time")
    model.graph.insert_before(x_dq, runtime_scale)
    x_dq.replace_input_with(1, runtime_scale.outputs[0])
    first = check_conformance(model, TENSORRT).violations[0]
    assert first.node == "x_dq" and "build-time constants" in first.reason


def test_nodes_inside_subgraphs_are_checked(tiny):
    """A contrib op inside an If branch is as foreign to portable as one in the main graph."""
    branch = [
        h.make_graph(
            [h.make_node(op, ["x"], [out], name=name, domain=domain)],
            name,
            [],
            [h.make_tensor_value_info(out, TensorProto.FLOAT, [2, 64])],
        )
        for op, out, name, domain in (("Relu", "t", "then", ""), ("Gelu", "e", "else_gelu", "com.microsoft"))
    ]
    nodes = [
        h.make_node("ReduceSum", ["x"], ["total"], name="sum", keepdims=0),
        h.make_node("Greater", ["total", "zero"], ["cond"], name="positive"),
        h.make_node("If", ["cond"], ["z"], name="branch", then_branch=branch[0], else_branch=branch[1]),
        h.make_node("MatMul", ["z", "w"], ["y"], name="mm"),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(RNG.standard_normal((64, 16)).astype(np.float32), "w"),
    ]
    model = ir.from_proto(matmul_graph(nodes, inits, [h.make_opsetid("com.microsoft", 1)]))
    first = check_conformance(model, PORTABLE).violations[0]
    assert first.node == "else_gelu" and "com.microsoft" in first.reason
    assert check_conformance(model, ORT_CPU).ok
