"""AWQ weight-only: the scale search and output-error clipping in numpy, the pass on a tiny LLaMA MLP.

The guarantees under test: the α search never picks a scale whose simulated output error exceeds
plain RTN's (α = 0); the clipping search never raises a block's output error; the pass folds the
scales into the norm / producer linear (or reports why not) and its model's output error on
held-out outlier-heavy inputs is below RTN's.
"""

import numpy as np
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.algorithms.awq import activation_scales, quantize_with_clipping, quantized_output_error, search_alpha
from onnxcomp.algorithms.blockwise import block_errors, block_grams, dequantize_blockwise, quantize_blockwise
from onnxcomp.errors import OnnxcompError
from tests.passes.test_smoothquant import NORM_CONSTS, rms_norm_nodes

HIDDEN, FFN = 64, 128


def outlier_rows(rows=256, k=HIDDEN, seed=0):
    """Rows whose channels 3 and 17 are 30x the rest: the LLM outlier pattern."""
    x = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    x[:, [3, 17]] *= 30.0
    return x


def test_activation_scales_are_normalized_and_shared_along_the_channel_map():
    mean_abs = np.array([1.0, 4.0, 2.0, 8.0])
    t = activation_scales(mean_abs, 0.5, np.array([0, 0, 1, 1]), 2)  # two producer channels, two readers each
    root = np.sqrt([4.0, 8.0])  # per producer channel the larger reader: a = (4, 8), then a^0.5
    np.testing.assert_allclose(t, root / np.sqrt(root[0] * root[1]))
    assert t[0] * t[1] == pytest.approx(1.0)
    np.testing.assert_allclose(activation_scales(mean_abs, 0.0, np.arange(4), 4), np.ones(4))


def test_search_picks_a_scale_no_worse_than_rtn_and_protects_outlier_channels():
    x = outlier_rows()
    w = (np.random.default_rng(1).standard_normal((HIDDEN, 48)) * 0.05).astype(np.float32)
    alpha, t, errors = search_alpha(x, [(w, 4, True)], np.arange(HIDDEN), HIDDEN, 32)
    assert alpha > 0 and errors[alpha] <= errors[0.0] and errors[alpha] < 0.8 * errors[0.0], errors
    assert t[3] > np.median(t) and t[17] > np.median(t)
    assert quantized_output_error(x, [(w, 4, True)], np.ones(HIDDEN), 32) == pytest.approx(errors[0.0])


def test_block_grams_cover_padding_with_zeros():
    x = np.random.default_rng(2).standard_normal((10, 40))
    grams = block_grams(x, 32)
    assert grams.shape == (2, 32, 32)
    np.testing.assert_allclose(grams[0], x[:, :32].T @ x[:, :32])
    np.testing.assert_allclose(grams[1][:8, :8], x[:, 32:].T @ x[:, 32:])
    assert not grams[1][8:].any()


@pytest.mark.parametrize("magnitude", [1.0, 1e25])
def test_block_errors_in_float32_match_float64_and_survive_huge_values(magnitude):
    rng = np.random.default_rng(5)
    grams = block_grams(rng.standard_normal((64, 64)), 32)
    delta = rng.standard_normal((8, 2, 32)) * magnitude
    exact = np.einsum("nbi,bij,nbj->nb", delta, grams, delta)
    with np.errstate(all="raise"):  # no overflow warning escapes: 1e25² leaves float32, the float64 retry does not
        got = block_errors(delta, grams)
    np.testing.assert_allclose(got, exact, rtol=1e-5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_output_clipping_never_raises_a_blocks_output_error(symmetric):
    x = outlier_rows(k=32)  # one block: the column's output error is the block's
    w = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    w[5] *= 6.0  # an outlier weight row that widens every block's range
    clipped = dequantize_blockwise(quantize_with_clipping(w, x, 4, 32, symmetric))
    plain = dequantize_blockwise(quantize_blockwise(w, 4, 32, symmetric))
    err_clipped = ((x @ (clipped - w)) ** 2).sum(axis=0)
    err_plain = ((x @ (plain - w)) ** 2).sum(axis=0)
    assert (err_clipped <= err_plain * (1 + 1e-6)).all()
    assert err_clipped.sum() < err_plain.sum()


def llama_mlp(tiny):
    """x → RMSNorm → gate/up → silu(gate)·up → down → + x."""
    rng = np.random.default_rng(4)
    nodes = rms_norm_nodes("x", "n") + [
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
        **{
            name: (rng.standard_normal(shape) * 0.1).astype(np.float32)
            for name, shape in {"w_gate": (HIDDEN, FFN), "w_up": (HIDDEN, FFN), "w_down": (FFN, HIDDEN)}.items()
        },
    }
    return tiny.make_model(nodes, [("x", [8, HIDDEN])], [("y", [8, HIDDEN])], inits, infer_shapes=True)


def feeds(count, seed):
    x = outlier_rows(8 * count, seed=seed)
    return [{"x": x[i * 8 : (i + 1) * 8]} for i in range(count)]


def awq_details(result):
    return next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only_awq")["details"]


@pytest.mark.parametrize("symmetric", [True, False])
def test_awq_pass_folds_scales_and_beats_rtn_on_held_out_inputs(tiny, symmetric):
    model = llama_mlp(tiny)
    options = {"group_size": 32, "symmetric": symmetric, "format": "qdq"}
    awq = onnxcomp.compress(
        model, [("quantize_weight_only_awq", options)], calibration=feeds(16, seed=5), use_cache=False
    )
    rtn = onnxcomp.compress(model, [("quantize_weight_only", options)], use_cache=False)
    held_out = feeds(8, seed=6)
    ref = np.concatenate([tiny.run(model, f)[0] for f in held_out])
    err_awq = np.linalg.norm(np.concatenate([tiny.run(awq.model, f)[0] for f in held_out]) - ref)
    err_rtn = np.linalg.norm(np.concatenate([tiny.run(rtn.model, f)[0] for f in held_out]) - ref)
    assert err_awq < 0.8 * err_rtn, (err_awq, err_rtn)
    details = awq_details(awq)
    layers = {layer["node"]: layer for layer in details["layers"]}
    assert layers["gate_proj"]["scale_absorbed_by"].startswith("RMSNorm")
    assert layers["gate_proj"]["alpha"] == layers["up_proj"]["alpha"] > 0  # one scale for the group
    assert layers["down_proj"]["scale_absorbed_by"].startswith("linear up_proj")
    assert details["groups_scaled"] == 2 and details["groups_not_scaled"] == []
    gamma = tiny.initializer(awq.model, "gamma")
    assert not np.allclose(gamma, np.linspace(0.5, 1.5, HIDDEN))  # 1/s went into the norm


def test_awq_formats_compute_the_same_function(tiny):
    model, calib = llama_mlp(tiny), feeds(8, seed=5)
    outputs = []
    for fmt in (
        "matmulnbits",
        "qdq",
    ):  # asymmetric: symmetric MatMulNBits blocks may take negative scales, QDQ's may not
        options = {"group_size": 32, "format": fmt, "accuracy_level": 0, "symmetric": False}
        result = onnxcomp.compress(model, [("quantize_weight_only_awq", options)], calibration=calib, use_cache=False)
        outputs.append(tiny.run(result.model, calib[0])[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
def test_awq_symmetric_scales_are_signed_except_in_qdq(tiny, fmt):
    result = onnxcomp.compress(
        llama_mlp(tiny),
        [("quantize_weight_only_awq", {"group_size": 32, "format": fmt})],
        calibration=feeds(8, seed=5),
        use_cache=False,
    )
    negative = [(s < 0).any() for s in tiny.weight_scales(result.model)]
    assert negative and any(negative) == (fmt == "matmulnbits")


def residual_reader(tiny):
    """A linear whose input is also read by a residual Add: no producer may absorb 1/s."""
    rng = np.random.default_rng(7)
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"], name="dense"), h.make_node("Add", ["mm", "x"], ["y"])]
    inits = {"w": (rng.standard_normal((HIDDEN, HIDDEN)) * 0.1).astype(np.float32)}
    return tiny.make_model(nodes, [("x", [8, HIDDEN])], [("y", [8, HIDDEN])], inits, infer_shapes=True)


def test_awq_reports_groups_it_cannot_scale_and_inserts_a_mul_when_asked(tiny):
    model, calib = residual_reader(tiny), feeds(8, seed=5)
    options = {"group_size": 32, "output_layer_bits": 0}
    skipped = awq_details(
        onnxcomp.compress(model, [("quantize_weight_only_awq", options)], calibration=calib, use_cache=False)
    )
    assert skipped["groups_scaled"] == 0
    assert "also read by Add" in skipped["groups_not_scaled"][0]["reason"]
    with_mul = onnxcomp.compress(
        model, [("quantize_weight_only_awq", {**options, "fallback": "mul"})], calibration=calib, use_cache=False
    )
    assert awq_details(with_mul)["groups_scaled"] == 1
    assert "Mul" in tiny.op_types(with_mul.model)
    ref = tiny.run(model, calib[0])[0]
    assert np.linalg.norm(tiny.run(with_mul.model, calib[0])[0] - ref) < 0.1 * np.linalg.norm(ref)


def test_awq_without_calibration_names_the_pass_and_option(tiny):
    with pytest.raises(OnnxcompError, match=r"quantize_weight_only_awq.*--calib"):
        onnxcomp.compress(llama_mlp(tiny), "w4a16-awq", use_cache=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"samples": 4}, "samples must be an integer"),
        ({"fallback": "x"}, "fallback must be"),
        ({"bits": 3}, "bits must be one of"),
        ({"symmetric": "yes"}, "symmetric must be true"),
        ({"algorithm": "gptq"}, "must be 'awq'"),
        ({"group_size": 48}, "group_size must be"),
    ],
)
def test_awq_bad_options(tiny, options, message):
    with pytest.raises(OnnxcompError, match=message):
        onnxcomp.compress(
            llama_mlp(tiny), [("quantize_weight_only_awq", options)], calibration=feeds(2, seed=5), use_cache=False
        )


def test_scale_only_keeps_the_function_and_hands_float_weights_to_gptq(tiny):
    model, calib = llama_mlp(tiny), feeds(8, seed=5)
    scaled = onnxcomp.compress(
        model,
        [("quantize_weight_only_awq", {"group_size": 32, "scale_only": True})],
        calibration=calib,
        use_cache=False,
    )
    assert tiny.op_types(scaled.model).count("MatMul") == 3  # nothing quantized yet
    assert awq_details(scaled)["groups_scaled"] == 2
    assert not np.allclose(tiny.initializer(scaled.model, "gamma"), np.linspace(0.5, 1.5, HIDDEN))
    for feed in calib[:3]:
        ref = tiny.run(model, feed)[0]
        np.testing.assert_allclose(tiny.run(scaled.model, feed)[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    both = onnxcomp.compress(
        model,
        "w4a16-awq-gptq",
        calibration=calib,
        use_cache=False,
        options={"quantize_weight_only_awq": {"group_size": 32}, "quantize_weight_only_gptq": {"group_size": 32}},
    )
    assert tiny.op_types(both.model).count("MatMulNBits") == 3


def test_awq_leaves_a_tied_lm_head_unscaled_so_the_table_is_stored_once(tiny):
    from tests.passes.test_weight_only import tied_lm

    model, _ = tied_lm(tiny)
    calib = [{"ids": np.random.default_rng(i).integers(0, 100, (2, 5))} for i in range(4)]
    result = onnxcomp.compress(
        model,
        "w4a16-awq",
        calibration=calib,
        use_cache=False,
        options={"quantize_weight_only_awq": {"group_size": 32, "samples": 16}},
    )
    details = awq_details(result)
    assert "tied to the embedding table 'table'" in details["groups_not_scaled"][0]["reason"]
    assert details["tied_tables"][0]["shared"] and "GatherBlockQuantized" in tiny.op_types(result.model)
