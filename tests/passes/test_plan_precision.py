"""plan_precision: units, bytes as emitted, budgets honoured, bad budgets refused (a tiny tied LM)."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxcomp.api import compress
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes.plan_precision import parse_size_budget
from onnxcomp.precision.units import find_units, parse_scheme

VOCAB, HIDDEN = 256, 128


def tiny_lm(tiny, hidden: int = HIDDEN) -> onnx.ModelProto:
    """ids → Gather(table) → q/k MatMuls (one input) → Add → o MatMul → Relu → +x → head (tableᵀ) → logits."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, hidden)).astype(np.float32) * 0.2  # logits not saturated
    h = tiny.helper
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["x"], name="embed"),
        h.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        h.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        h.make_node("Add", ["q", "k"], ["qk"]),
        h.make_node("MatMul", ["qk", "wo"], ["o"], name="o_proj"),
        h.make_node("Relu", ["o"], ["r"]),
        h.make_node("Add", ["r", "x"], ["res"]),
        h.make_node("MatMul", ["res", "head"], ["logits"], name="lm_head"),
    ]
    inits = {name: rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.2 for name in ("wq", "wk", "wo")}
    inits.update(table=table, head=table.T.copy())
    ids = h.make_tensor_value_info("ids", tiny.TensorProto.INT64, [1, 16])
    return tiny.make_model(nodes, [ids], [("logits", [1, 16, VOCAB])], inits, infer_shapes=True)


def feeds(n: int = 4) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"ids": rng.integers(0, VOCAB, size=(1, 16), dtype=np.int64)} for _ in range(n)]


def mixed(model, **plan_options):
    return compress(model, "w4a16-mixed", feeds(), options={"plan_precision": plan_options}, use_cache=False)


def mixed_on(model, target: str):
    return compress(model, "w4a16-mixed", feeds(), target=target, use_cache=False)


def plan_details(report: dict) -> dict:
    return next(p for p in report["passes"] if p["pass"] == "plan_precision")["details"]


def blockwise_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the distinct initializers that MatMulNBits nodes read (codes, scales, zero points)."""
    inits = {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}
    read = {name for n in model.graph.node if n.op_type == "MatMulNBits" for name in n.input[1:] if name in inits}
    return sum(inits[name] for name in read)


def test_units_group_by_input_and_keep_tied_tables_with_the_head(tiny):
    units, skipped = find_units(ir.from_proto(tiny_lm(tiny)))
    assert [[lin.name for lin in u.linears] for u in units] == [["q_proj", "k_proj"], ["o_proj"], ["lm_head"]]
    assert units[2].tied_tables == ["table"] and not skipped


@pytest.mark.parametrize("text", ["int4-g16-sym", "int3-g128-sym", "fp8", "int4-128-sym"])
def test_unknown_schemes_are_refused(text):
    with pytest.raises(OnnxcompError, match="unknown scheme"):
        parse_scheme(text)


@pytest.mark.parametrize("text", ["abc", "0x", "1.5x", "-3MB", "12 parsecs", True])
def test_malformed_size_budgets_are_refused(text):
    with pytest.raises(OnnxcompError, match="size budget"):
        parse_size_budget(text)


def test_size_budget_forms():
    assert parse_size_budget("0.19x") == ("fraction", 0.19)
    assert parse_size_budget("120MB") == ("bytes", 120e6)
    assert parse_size_budget(5000) == ("bytes", 5000)


def test_predicted_bytes_are_the_emitted_bytes_and_the_budget_is_met(tiny):
    model = tiny_lm(tiny)
    uniform = mixed(model)
    details = plan_details(uniform.report)
    assert details["predicted_unit_bytes"] == blockwise_bytes(uniform.model)
    assert details["predicted_unit_bytes"] <= details["budget"]["unit_bytes"]
    assert uniform.report["size_budget"] == {  # the default budget is checked on the written file too
        "bytes": details["budget"]["file_bytes"],
        "output_bytes": uniform.report["output_bytes"],
        "met": True,
    }
    front = details["pareto"]
    budget = (front[0]["file_bytes"] + front[-1]["file_bytes"]) // 2
    result = mixed(model, size_budget=budget)
    planned = plan_details(result.report)
    assert planned["predicted_file_bytes"] <= budget
    assert result.report["size_budget"]["met"] and result.report["output_bytes"] <= budget
    assert abs(result.report["output_bytes"] - planned["predicted_file_bytes"]) <= 0.01 * budget
    assert result.report["size_budget"]["bytes"] == budget
    assert len(planned["chosen"]) >= 1 and len(planned["units"]) == 3
    assert all(u["measured_error"] > 0 for u in planned["units"])
    assert result.report["final_error"]["metric"] == "kl" and result.report["final_error"]["value"] > 0


def test_a_larger_budget_buys_a_smaller_error(tiny):
    model = tiny_lm(tiny)
    small, large = mixed(model, size_budget="0.12x"), mixed(model, size_budget="0.9x")
    assert large.report["output_bytes"] > small.report["output_bytes"]
    assert plan_details(large.report)["predicted_error"] < plan_details(small.report)["predicted_error"]
    assert large.report["final_error"]["value"] < small.report["final_error"]["value"]


def test_a_budget_below_the_smallest_model_names_the_minimum_and_writes_nothing(tiny, tmp_path):
    out = tmp_path / "out.onnx"
    with pytest.raises(OnnxcompError, match="below the smallest model these candidates reach"):
        compress(
            tiny_lm(tiny),
            "w4a16-mixed",
            feeds(),
            output=out,
            options={"plan_precision": {"size_budget": "0.01x"}},
            use_cache=False,
        )
    assert not out.exists()


def test_shortlisted_measurement_scales_the_rest_by_the_measured_ratio(tiny):
    model = tiny_lm(tiny)
    details = plan_details(mixed(model, measure=1).report)
    measured = [u for u in details["units"] if u["measured_error"] is not None]
    assert len(measured) == 1
    proxies_only = plan_details(mixed(model, measure=0).report)
    assert all(u["measured_error"] is None for u in proxies_only["units"])
    assert proxies_only["metric"] == "proxy" and proxies_only["proxy_rank_correlation"] is None


def test_fp16_units_are_stored_as_float16_behind_a_cast(tiny):
    """With room for everything the allocator takes the least error: fp16 for the untied units; the
    head's unit has a tied table, so it stays blockwise. The fp16 bytes are the predicted ones."""
    model = tiny_lm(tiny)
    result = mixed(model, candidates=["int4-g128-sym", "fp16"], size_budget="1x")
    details = plan_details(result.report)
    choices = {u["unit"]: u["choice"] for u in details["units"]}
    assert choices["q_proj"] == choices["o_proj"] == "fp16" and choices["lm_head"] != "fp16"
    out = result.model
    halves = {i.name: i for i in out.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert len(halves) == 3  # wq, wk, wo
    for name in ("q_proj", "k_proj", "o_proj"):
        cast = tiny.producer(out, tiny.node_named(out, name).input[1])
        assert cast.op_type == "Cast" and cast.input[0] in halves
    predicted = sum(u["candidates"]["fp16"]["bytes"] for u in details["units"] if u["choice"] == "fp16")
    assert predicted == sum(numpy_helper.to_array(i).nbytes for i in halves.values())
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, half in halves.items():  # float16 rounding of the original weight, nothing more
        original = originals[name.removesuffix("_fp16")]
        assert (
            np.abs(numpy_helper.to_array(half).astype(np.float32) - original).max() <= 2**-11 * np.abs(original).max()
        )
    assert tiny.run(out, feeds(1)[0])[0].shape == (1, 16, VOCAB)


def dq_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the distinct constants DequantizeLinear nodes read (codes, scales, zero points)."""
    inits = {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}
    read = {name for n in model.graph.node if n.op_type == "DequantizeLinear" for name in n.input if name in inits}
    return sum(inits[name] for name in read)


def test_tensorrt_offers_int8_per_channel_where_it_cannot_block_int8(tiny):
    """TensorRT blocks int4 only, by 64 or 128, and reads int8 per channel: the planner's int8
    candidates become per-channel ones (not dropped), g32 is dropped, a generous budget picks int8
    per channel, and their bytes are the emitted ones."""
    result = compress(
        tiny_lm(tiny),
        "w4a16-mixed",
        feeds(),
        options={
            "plan_precision": {"candidates": ["int4-g32-sym", "int4-g128-sym", "int8-g128-sym"], "size_budget": "0.9x"}
        },
        target="tensorrt",
        use_cache=False,
    )
    details = plan_details(result.report)
    assert all(set(u["candidates"]) == {"int4-g128-sym", "int8-channel"} for u in details["units"])
    assert {u["choice"] for u in details["units"]} == {"int8-channel"}
    assert details["predicted_unit_bytes"] == dq_bytes(result.model)
    assert result.report["conformance"]["conforms"]
    inits = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    dqs = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear"]
    int8 = [n for n in dqs if inits[n.input[0]].dtype == np.int8]
    assert len(int8) == 4  # q, k, o and the head; the tied table shares the head's codes
    assert all(inits[n.input[1]].ndim == 1 and not any(a.name == "block_size" for a in n.attribute) for n in int8)


@pytest.mark.parametrize("target", ["tensorrt", "portable"])
def test_default_budget_holds_where_blocks_cannot_share_the_tied_table(tiny, target):
    """DequantizeLinear blocks (tensorrt, portable) give a Gather no codes to read: an LM head planned
    in blocks leaves its tied table stored apart. The planner counts that table (tensorrt: int8 per
    channel shares it, so the head takes that), so the default budget — the preset's file — holds and
    the predicted file is the written one."""
    result = mixed_on(tiny_lm(tiny), target)
    details = plan_details(result.report)
    assert result.report["size_budget"]["met"]
    predicted, written = details["predicted_file_bytes"], result.report["output_bytes"]
    assert abs(written - predicted) <= 0.02 * predicted  # node bytes are estimated (NODE_BYTES)
    head = next(u for u in details["units"] if u["tied_tables"])
    if target == "tensorrt":
        assert head["choice"] == "int8-channel"


def test_default_budget_prices_the_presets_rule_as_the_target_stores_it(tiny):
    """On tensorrt 128 does not divide K = 192, so the presets write those layers in g64 blocks: the
    default budget is the preset's file (here w4a16-rtn's), not a padded-g128 estimate."""
    model = tiny_lm(tiny, hidden=192)
    preset = compress(model, "w4a16-rtn", target="tensorrt", use_cache=False)
    budget = plan_details(mixed_on(model, "tensorrt").report)["budget"]["file_bytes"]
    assert abs(budget - preset.report["output_bytes"]) <= 0.02 * preset.report["output_bytes"]


def test_int8_per_channel_on_ort_cpu_is_stored_over_n_and_fused_by_onnx_runtime(tiny, tmp_path):
    """`int8-channel` on ort-cpu: the untied units take it under a generous budget, written as an int8
    DequantizeLinear over N (one float scale per column: 8.0 bits a weight, the predicted bytes) in a
    MatMulNBits file; ONNX Runtime fuses each into a MatMulNBits at load. The tied head is not offered
    it (its table's Gather would keep the DequantizeLinear unfused) and stays in blocks. (ONNX Runtime
    1.32 also leaves a DequantizeLinear unfused whose MatMul feeds a Relu: o_proj here.)"""
    model = tiny_lm(tiny)
    result = compress(
        model,
        "w4a16-mixed",
        feeds(),
        options={"plan_precision": {"candidates": ["int4-g128-sym", "int8-channel"], "size_budget": "0.9x"}},
        use_cache=False,
    )
    details = plan_details(result.report)
    assert {u["unit"]: u["choice"] for u in details["units"]} == {
        "q_proj": "int8-channel",
        "o_proj": "int8-channel",
        "lm_head": "int4-g128-sym",
    }
    assert set(details["units"][2]["candidates"]) == {"int4-g128-sym"}
    assert details["predicted_unit_bytes"] == blockwise_bytes(result.model) + dq_bytes(result.model)
    inits = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    dqs = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 3 and all(inits[n.input[0]].dtype == np.int8 and inits[n.input[1]].ndim == 1 for n in dqs)
    path, optimized = tmp_path / "mixed.onnx", tmp_path / "optimized.onnx"
    onnx.save(result.model, path)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    still_dequantized = {n.input[0] for n in onnx.load(optimized).graph.node if n.op_type == "DequantizeLinear"}
    assert not still_dequantized & {"wq_q8", "wk_q8"}  # fused; ORT 1.32 leaves the one before a Relu (o_proj)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    feed = feeds(1)[0]
    reference, output = unfused.run(None, feed)[0], session.run(None, feed)[0]
    assert np.abs(output - reference).max() < 0.02 * np.abs(reference).max()  # the fused kernel: same function
