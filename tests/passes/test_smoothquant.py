"""SmoothQuant: pattern recognition, scale arithmetic, the pass on tiny graphs, bad input.

The guarantee under test: smoothing alone leaves the model's function unchanged (outputs move
by float rounding only), and with int8 QDQ after it the error on outlier-heavy activations
drops compared with plain W8A8.
"""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.algorithms.smoothing import producer_scales, quantized_output_error, search_alpha, smoothing_scales
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.patterns import LinearProducer, NormProducer, find_linear_groups
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context

HIDDEN, FFN = 8, 16


def outlier_feeds(count=6, shape=(2, 4, HIDDEN), seed=0, name="x"):
    """Activations where channel 3 is 40x larger than the rest: the LLM outlier pattern."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        x = rng.standard_normal(shape).astype(np.float32)
        x[..., 3] *= 40.0
        feeds.append({name: x})
    return feeds


def weights(seed=1, **shapes):
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.3).astype(np.float32) for name, shape in shapes.items()}


def rms_norm_nodes(x, out, reciprocal=False):
    """Decomposed RMSNorm: Pow/ReduceMean/Add/Sqrt then Div (or Reciprocal + Mul), then Mul(gamma)."""
    nodes = [
        h.make_node("Pow", [x, "two"], ["sq"]),
        h.make_node("ReduceMean", ["sq", "last_axis"], ["ms"]),
        h.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        h.make_node("Sqrt", ["ms_eps"], ["rms"]),
    ]
    if reciprocal:
        nodes += [h.make_node("Reciprocal", ["rms"], ["inv"]), h.make_node("Mul", [x, "inv"], ["normed"])]
    else:
        nodes.append(h.make_node("Div", [x, "rms"], ["normed"]))
    nodes.append(h.make_node("Mul", ["normed", "gamma"], [out]))
    return nodes


NORM_CONSTS = {"two": np.array(2.0, np.float32), "last_axis": np.array([-1]), "eps": np.array(1e-6, np.float32)}


def prenorm_mlp(tiny, reciprocal=False):
    """x → RMSNorm → gate/up → silu(gate)·up → down → + x  (a LLaMA MLP block)."""
    nodes = rms_norm_nodes("x", "n", reciprocal) + [
        h.make_node("MatMul", ["n", "w_gate"], ["gate"], name="gate_proj"),
        h.make_node("MatMul", ["n", "w_up"], ["up"], name="up_proj"),
        h.make_node("Sigmoid", ["gate"], ["sig"]),
        h.make_node("Mul", ["gate", "sig"], ["silu"]),
        h.make_node("Mul", ["silu", "up"], ["gated"]),
        h.make_node("MatMul", ["gated", "w_down"], ["down"], name="down_proj"),
        h.make_node("Add", ["x", "down"], ["y"]),
    ]
    inits = {
        **NORM_CONSTS,
        "gamma": np.linspace(0.5, 1.5, HIDDEN).astype(np.float32),
        **weights(w_gate=(HIDDEN, FFN), w_up=(HIDDEN, FFN), w_down=(FFN, HIDDEN)),
    }
    return tiny.make_model(nodes, [("x", [2, 4, HIDDEN])], [("y", [2, 4, HIDDEN])], inits, infer_shapes=True)


def postnorm_block(tiny):
    """BERT style: LayerNormalization output feeds a biased linear and the residual Add."""
    nodes = [
        h.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1),
        h.make_node("MatMul", ["n", "w"], ["mm"], name="dense"),
        h.make_node("Add", ["mm", "b"], ["lin"]),
        h.make_node("Add", ["lin", "n"], ["y"]),
    ]
    inits = {
        "gamma": np.linspace(0.5, 1.5, HIDDEN).astype(np.float32),
        "beta": np.linspace(-0.2, 0.2, HIDDEN).astype(np.float32),
        "b": np.linspace(-1, 1, HIDDEN).astype(np.float32),
        **weights(w=(HIDDEN, HIDDEN)),
    }
    return tiny.make_model(nodes, [("x", [2, 4, HIDDEN])], [("y", [2, 4, HIDDEN])], inits, infer_shapes=True)


def decomposed_layernorm(tiny):
    """Sub(mean)/Pow/ReduceMean/Add/Sqrt/Div, Mul(gamma), Add(beta) → one linear."""
    nodes = [
        h.make_node("ReduceMean", ["x", "last_axis"], ["mean"]),
        h.make_node("Sub", ["x", "mean"], ["centered"]),
        h.make_node("Pow", ["centered", "two"], ["sq"]),
        h.make_node("ReduceMean", ["sq", "last_axis"], ["var"]),
        h.make_node("Add", ["var", "eps"], ["var_eps"]),
        h.make_node("Sqrt", ["var_eps"], ["std"]),
        h.make_node("Div", ["centered", "std"], ["normed"]),
        h.make_node("Mul", ["normed", "gamma"], ["scaled"]),
        h.make_node("Add", ["scaled", "beta"], ["n"]),
        h.make_node("MatMul", ["n", "w"], ["y"], name="dense"),
    ]
    inits = {
        **NORM_CONSTS,
        "gamma": np.linspace(0.5, 1.5, HIDDEN).astype(np.float32),
        "beta": np.linspace(-0.2, 0.2, HIDDEN).astype(np.float32),
        **weights(w=(HIDDEN, 4)),
    }
    return tiny.make_model(nodes, [("x", [2, 4, HIDDEN])], [("y", [2, 4, 4])], inits, infer_shapes=True)


def gqa_attention(tiny):
    """V (2 KV heads of 2) repeated to 4 heads, probabilities · V, merged heads → O projection."""
    nodes = [
        h.make_node("MatMul", ["x", "w_v"], ["v"], name="v_proj"),
        h.make_node("Reshape", ["v", "kv_shape"], ["v_heads"]),
        h.make_node("Transpose", ["v_heads"], ["v_t"], perm=[0, 2, 1, 3]),
        h.make_node("Unsqueeze", ["v_t", "axis2"], ["v_u"]),
        h.make_node("Expand", ["v_u", "rep_shape"], ["v_rep"]),
        h.make_node("Reshape", ["v_rep", "heads_shape"], ["v_all"]),
        h.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        h.make_node("MatMul", ["probs", "v_all"], ["ctx"]),
        h.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["ctx_t", "merged_shape"], ["merged"]),
        h.make_node("MatMul", ["merged", "w_o"], ["y"], name="o_proj"),
    ]
    inits = {
        "kv_shape": np.array([1, 4, 2, 2]),
        "axis2": np.array([2]),
        "rep_shape": np.array([1, 2, 2, 4, 2]),
        "heads_shape": np.array([1, 4, 4, 2]),
        "merged_shape": np.array([1, 4, 8]),
        **weights(w_v=(HIDDEN, 4), w_o=(8, HIDDEN)),
    }
    return tiny.make_model(
        nodes, [("x", [1, 4, HIDDEN]), ("scores", [1, 4, 4, 4])], [("y", [1, 4, HIDDEN])], inits, infer_shapes=True
    )


def smooth(model, feeds, **options):
    return onnxcomp.compress(model, [("calibrate", {}), ("smoothquant", options)], calibration=feeds, use_cache=False)


def details(result, name="smoothquant"):
    return next(p["details"] for p in result.report["passes"] if p["pass"] == name)


def assert_same_function(tiny, before, after, feeds, tol=1e-5):
    for feed in feeds:
        expected, got = tiny.run(before, feed)[0], tiny.run(after, feed)[0]
        assert np.linalg.norm(got - expected) <= tol * np.linalg.norm(expected)


# -- arithmetic -----------------------------------------------------------------------------
def test_smoothing_scales_formula_and_dead_channels():
    a, w = np.array([4.0, 1.0, 0.0, 9.0]), np.array([1.0, 4.0, 2.0, 0.0])
    s = smoothing_scales(a, w, 0.5)
    np.testing.assert_allclose(s, [2.0, 0.5, 1.0, 1.0])  # sqrt(a/w); no signal → 1
    np.testing.assert_allclose(smoothing_scales(a[:2], w[:2], 1.0), [4.0, 1.0])
    np.testing.assert_allclose(smoothing_scales(a[:2], w[:2], 0.0), [1.0, 0.25])


def test_producer_scales_share_one_scale_per_repeated_channel():
    # input channels 0,1 read producer channel 0; 2,3 read producer channel 1 (grouped heads)
    channel_map = np.array([0, 0, 1, 1])
    t = producer_scales(np.array([1.0, 16.0, 4.0, 1.0]), np.array([1.0, 1.0, 1.0, 4.0]), channel_map, 2, 0.5)
    np.testing.assert_allclose(t, [4.0, 1.0])  # joint maxima: a = (16, 4), w = (1, 4)
    assert (t[channel_map][:2] == t[0]).all()


def test_search_alpha_beats_no_smoothing_on_outliers():
    x = outlier_feeds(count=1, shape=(64, HIDDEN))[0]["x"]
    w = weights(w=(HIDDEN, 12))["w"]
    act, wmax = np.abs(x).max(axis=0), np.abs(w).max(axis=1)
    best, errors = search_alpha(x, w, act, lambda a: smoothing_scales(act, wmax, a))
    assert errors[best] == min(errors.values())
    assert errors[best] < 0.5 * errors[None]  # None: the group left unsmoothed (s = 1)
    assert quantized_output_error(x, w, act, np.ones(HIDDEN)) == errors[None]


def test_search_alpha_keeps_the_group_unsmoothed_when_no_alpha_helps():
    x = np.random.default_rng(0).standard_normal((64, HIDDEN)).astype(np.float32)
    w = weights(w=(HIDDEN, 12))["w"]
    best, errors = search_alpha(x, w, np.abs(x).max(axis=0), lambda a: np.geomspace(1e-3, 1e3, HIDDEN))
    assert best is None and errors[None] < errors[0.5]


# -- recognition ----------------------------------------------------------------------------
@pytest.mark.parametrize("reciprocal", [False, True])
def test_prenorm_mlp_groups(tiny, reciprocal):
    groups = find_linear_groups(ir.from_proto(prenorm_mlp(tiny, reciprocal)))
    assert [g.name for g in groups] == ["gate_proj+up_proj", "down_proj"]
    norm, down = groups[0].producer, groups[1].producer
    assert isinstance(norm, NormProducer) and norm.kind == "RMSNorm (decomposed)"
    assert isinstance(down, LinearProducer) and down.linear.name == "up_proj"  # not gate: it feeds Sigmoid too
    assert (groups[1].channel_map == np.arange(FFN)).all()


def test_layernorm_op_with_residual_has_no_foldable_producer(tiny):
    (group,) = find_linear_groups(ir.from_proto(postnorm_block(tiny)))
    assert group.producer is None and "also read by Add" in group.reason
    assert group.linears[0].bias is not None  # MatMul + Add(bias) is one linear


def test_decomposed_layernorm_is_recognized(tiny):
    (group,) = find_linear_groups(ir.from_proto(decomposed_layernorm(tiny)))
    assert group.producer.kind == "LayerNorm (decomposed)" and group.producer.bias is not None


def test_grouped_query_attention_channel_map(tiny):
    groups = {g.name: g for g in find_linear_groups(ir.from_proto(gqa_attention(tiny)))}
    o_group = groups["o_proj"]
    assert isinstance(o_group.producer, LinearProducer) and o_group.producer.linear.name == "v_proj"
    # merged channel j = head*2 + i; heads 0,1 read KV head 0 and heads 2,3 KV head 1
    assert o_group.channel_map.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


# -- the pass -------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.5, "auto"])
def test_smoothing_keeps_the_function_and_moves_outliers(tiny, alpha):
    model, feeds = prenorm_mlp(tiny), outlier_feeds()
    result = smooth(model, feeds, alpha=alpha)
    assert_same_function(tiny, model, result.model, feeds)
    report = details(result)
    assert [g["producer"] for g in report["smoothed"]][1] == "linear up_proj (via Mul)"
    first = report["smoothed"][0]
    assert first["producer"].startswith("RMSNorm (decomposed)")
    assert first["activation_absmax_after"]["max"] < first["activation_absmax_before"]["max"]
    assert 0.0 <= first["alpha"] <= 1.0
    if alpha == "auto":
        assert first["search_error"]["best"] <= first["search_error"]["at_0.5"]
    assert tiny.initializer(result.model, "gamma").tolist() != tiny.initializer(model, "gamma").tolist()


def test_smoothquant_lowers_w8a8_error_on_outliers(tiny):
    model, feeds = prenorm_mlp(tiny), outlier_feeds()
    tail = [("calibrate", {}), ("quantize_qdq", {"method": "minmax"})]
    plain = onnxcomp.compress(model, tail, calibration=feeds, use_cache=False).model
    smoothed = onnxcomp.compress(
        model, [("calibrate", {}), ("smoothquant", {"alpha": "auto"}), *tail], calibration=feeds, use_cache=False
    ).model

    def error(candidate):
        return sum(np.linalg.norm(tiny.run(candidate, f)[0] - tiny.run(model, f)[0]) for f in feeds)

    assert error(smoothed) < 0.7 * error(plain)


def test_fallback_mul_smooths_a_postnorm_block(tiny):
    model, feeds = postnorm_block(tiny), outlier_feeds()
    skipped = details(smooth(model, feeds))
    assert skipped["smoothed"] == [] and "also read by Add" in skipped["not_smoothed"][0]["reason"]
    result = smooth(model, feeds, fallback="mul")
    assert_same_function(tiny, model, result.model, feeds)
    assert "Mul" in tiny.op_types(result.model) and details(result)["smoothed"][0]["producer"] == "inserted Mul"
    assert (
        tiny.initializer(result.model, "gamma").tolist() == tiny.initializer(model, "gamma").tolist()
    )  # residual intact


def test_decomposed_layernorm_fold_folds_gamma_and_beta(tiny):
    model, feeds = decomposed_layernorm(tiny), outlier_feeds()
    result = smooth(model, feeds, alpha=0.8)
    assert_same_function(tiny, model, result.model, feeds)
    assert tiny.initializer(result.model, "beta").tolist() != tiny.initializer(model, "beta").tolist()


def test_grouped_query_attention_fold_keeps_the_function(tiny):
    model = gqa_attention(tiny)
    rng = np.random.default_rng(3)
    feeds = [
        {
            "x": outlier_feeds(1, (1, 4, HIDDEN), seed=i)[0]["x"],
            "scores": rng.standard_normal((1, 4, 4, 4)).astype(np.float32),
        }
        for i in range(4)
    ]
    result = smooth(model, feeds)
    assert [g["producer"] for g in details(result)["smoothed"]][-1].startswith("linear v_proj")
    assert_same_function(tiny, model, result.model, feeds)


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half", True])
def test_alpha_out_of_range(tiny, alpha):
    with pytest.raises(OnnxcompError, match="alpha must be a number in \\[0, 1\\] or 'auto'"):
        smooth(prenorm_mlp(tiny), outlier_feeds(), alpha=alpha)


def test_exclude_must_be_a_list(tiny):
    with pytest.raises(OnnxcompError, match="exclude must be a list"):
        smooth(prenorm_mlp(tiny), outlier_feeds(), exclude="gate_proj")


def test_bad_fallback(tiny):
    with pytest.raises(OnnxcompError, match="fallback must be one of skip, mul"):
        smooth(prenorm_mlp(tiny), outlier_feeds(), fallback="insert")


def test_missing_statistics_name_the_tensor(tiny):
    """Run directly (not through the pass manager), nobody collects the pass's requests: one line."""
    smoothquant = PASSES["smoothquant"](Context(calibration=outlier_feeds()))
    with pytest.raises(OnnxcompError, match="statistics missing for tensor 'n'.*calibrate"):
        smoothquant(ir.from_proto(prenorm_mlp(tiny)))


def test_without_a_calibrate_step_the_manager_collects_ranges_and_rows_in_one_pass(tiny, monkeypatch):
    """smoothquant alone: its ranges and its α-search rows come from one collection (one ORT session),
    and the result is the bytes of the recipe with an explicit calibrate step."""
    import onnxcomp.passes.manager as manager

    calls = []
    real_collect = manager.collect
    monkeypatch.setattr(
        manager,
        "collect",
        lambda *a, **k: calls.append(sorted({type(r).__name__ for r in a[1]})) or real_collect(*a, **k),
    )
    alone = onnxcomp.compress(
        prenorm_mlp(tiny), [("smoothquant", {"alpha": "auto"})], calibration=outlier_feeds(), use_cache=False
    )
    assert calls == [["RangeRequest", "RowsRequest"]]
    stepped = onnxcomp.compress(
        prenorm_mlp(tiny),
        [("calibrate", {}), ("smoothquant", {"alpha": "auto"})],
        calibration=outlier_feeds(),
        use_cache=False,
    )
    assert alone.model.SerializeToString(deterministic=True) == stepped.model.SerializeToString(deterministic=True)


def test_shared_norm_scale_is_reported_not_folded(tiny):
    nodes = [
        h.make_node("Mul", ["x", "gamma"], ["n1"]),
        h.make_node("MatMul", ["n1", "w1"], ["y1"], name="first"),
        h.make_node("Mul", ["y1", "gamma"], ["n2"]),
        h.make_node("MatMul", ["n2", "w2"], ["y"], name="second"),
    ]
    inits = {"gamma": np.linspace(0.5, 1.5, HIDDEN).astype(np.float32), **weights(w1=(HIDDEN, HIDDEN), w2=(HIDDEN, 4))}
    model = tiny.make_model(nodes, [("x", [2, 4, HIDDEN])], [("y", [2, 4, 4])], inits, infer_shapes=True)
    report = details(smooth(model, outlier_feeds()))
    reasons = " ".join(entry["reason"] for entry in report["not_smoothed"])
    assert "norm constant 'gamma' is shared with node" in reasons
    assert report["smoothed"] == []


def test_model_without_linear_groups_reports_and_keeps_the_model(tiny):
    model = tiny.make_model([h.make_node("Relu", ["x"], ["y"])], [("x", [2, 4, HIDDEN])], [("y", [2, 4, HIDDEN])])
    result = smooth(model, outlier_feeds())
    report = details(result)
    assert report["smoothed"] == [] and "no linear group was smoothed" in report["note"]
    assert tiny.op_types(result.model) == ["Relu"]


def test_recipe_file_and_cli_options(tmp_path, tiny):
    recipe = tmp_path / "sq.toml"
    recipe.write_text(
        'base = "w8a8-smoothquant"\n[options.smoothquant]\nalpha = 0.7\n[options.quantize_qdq]\nmethod = "minmax"\n'
    )
    result = onnxcomp.compress(prenorm_mlp(tiny), recipe, calibration=outlier_feeds(), use_cache=False)
    assert {g["alpha"] for g in details(result)["smoothed"]} == {0.7}
    assert "QuantizeLinear" in tiny.op_types(result.model)
    # each calibrate measures what the passes before the next calibrate need: first the two
    # group inputs for smoothing, then the same two tensors (changed by smoothing) for quantize_qdq
    calibrations = [p["details"]["tensors"] for p in result.report["passes"] if p["pass"] == "calibrate"]
    assert calibrations == [2, 2]


def test_shared_producer_bias_is_not_folded(tiny):
    """Exporters deduplicate equal constants: a bias shared by two layers must not be rescaled."""
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="first"),
        h.make_node("Add", ["m1", "b"], ["y1"]),
        h.make_node("MatMul", ["y1", "w2"], ["m2"], name="second"),
        h.make_node("Add", ["m2", "b"], ["y2"]),
        h.make_node("MatMul", ["y2", "w3"], ["y"], name="third"),
    ]
    inits = {
        "b": np.linspace(-1, 1, HIDDEN).astype(np.float32),
        **weights(w1=(HIDDEN, HIDDEN), w2=(HIDDEN, HIDDEN), w3=(HIDDEN, 4)),
    }
    model = tiny.make_model(nodes, [("x", [2, 4, HIDDEN])], [("y", [2, 4, 4])], inits, infer_shapes=True)
    groups = {g.name: g for g in find_linear_groups(ir.from_proto(model))}
    assert groups["second"].producer is None and "'b' of first is shared" in groups["second"].reason
    result = smooth(model, outlier_feeds(), fallback="mul")
    assert_same_function(tiny, model, result.model, outlier_feeds())
