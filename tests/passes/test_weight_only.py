"""Weight-only int4/int8: blockwise arithmetic, packing, the three emission formats, bad input."""

import numpy as np
import onnx
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.algorithms.blockwise import (
    dequantize_blockwise,
    pack_along_last,
    packed_codes,
    quantize_blockwise,
    signed_codes_kn,
    unpack_along_last,
)
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes.weight_only_base import relative_error


def weight(k=200, n=24, seed=0):
    return (np.random.default_rng(seed).standard_normal((k, n)) * 0.05).astype(np.float32)


# -- arithmetic -----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_roundtrip_within_half_a_step(bits, group, symmetric):
    w = weight(k=200)  # 200 is not a multiple of any group size: the last block is padded
    q = quantize_blockwise(w, bits, group, symmetric)
    assert q.codes.shape == (24, -(-200 // group), group) and q.codes.max() <= 2**bits - 1
    back = dequantize_blockwise(q)
    assert back.shape == w.shape
    step = np.repeat(q.scales.T, group, axis=0)[:200]  # [K, N] step of each element's block
    # asymmetric: half a step; symmetric: the short side of [-8, 7] may clip by up to one step
    assert (np.abs(back - w) <= step * (1.0 if symmetric else 0.5) + 1e-7).all()
    if symmetric:
        assert (q.zero_points == 2 ** (bits - 1)).all() and (q.scales > 0).all()


def test_symmetric_block_keeps_its_largest_magnitude_exact():
    w = np.zeros((32, 2), np.float32)
    w[:, 0] = np.linspace(-1.0, 0.5, 32)  # negative extreme → −8 exactly
    w[:, 1] = np.linspace(-0.5, 1.0, 32)  # positive extreme → +7 exactly
    for signed_scales in (False, True):
        back = dequantize_blockwise(quantize_blockwise(w, 4, 32, True, signed_scales=signed_scales))
        assert back[0, 0] == pytest.approx(-1.0) and back[-1, 1] == pytest.approx(1.0)


def test_signed_scales_map_the_extreme_to_minus_8_with_a_step_of_max_over_8():
    """ONNX Runtime's symmetric rule: a positive extreme takes a negative scale, so every block's
    step is max|w| / 8 (positive-only scales need max|w| / 7 for it) and its error is smaller."""
    w = weight(k=256)
    q = quantize_blockwise(w, 4, 128, True, signed_scales=True)
    blocks = w.T.reshape(24, 2, 128)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(q.scales, (extreme / -8).astype(np.float32))
    assert (q.scales < 0).any() and (q.scales > 0).any()
    assert (np.take_along_axis(q.codes, np.abs(blocks).argmax(-1)[..., None], -1) == 0).all()  # code 0 = −8
    positive_only = quantize_blockwise(w, 4, 128, True)
    assert relative_error(dequantize_blockwise(q), w) < relative_error(dequantize_blockwise(positive_only), w)


def test_nibble_packing_layout():
    codes = np.arange(10, dtype=np.uint8).reshape(1, 1, 10) % 16
    packed = pack_along_last(codes)
    assert packed.tolist() == [[[0x10, 0x32, 0x54, 0x76, 0x98]]]  # low nibble = even index
    assert unpack_along_last(packed, 10).tolist() == codes.tolist()
    assert pack_along_last(np.array([[1, 2, 3]], np.uint8)).tolist() == [[0x21, 0x03]]  # odd: padded


def test_clip_search_never_raises_the_weight_error():
    w = weight(k=256, seed=3)
    w[5, 3] = 1.0  # an outlier that clipping can trade away
    plain, searched = (dequantize_blockwise(quantize_blockwise(w, 4, 64, True, c)) for c in (False, True))
    assert np.linalg.norm(searched - w) <= np.linalg.norm(plain - w)


@pytest.mark.parametrize("bits, group", [(3, 128), (4, 48), (4, 0)])
def test_unsupported_settings(bits, group):
    with pytest.raises(OnnxcompError, match="bits must be one of 4, 8|group_size must be one of 32, 64, 128"):
        quantize_blockwise(weight(), bits, group)


# -- the pass and its formats ---------------------------------------------------------------
def linear_model(tiny, k=200, n=24, gemm=False, negative_extremes=False):
    """`negative_extremes`: every block's largest magnitude is negative, so symmetric blocks get the
    same positive scale from both rules (signed for MatMulNBits, positive for QDQ)."""
    w = weight(k, n)
    if negative_extremes:
        w[::32] = -2 * np.abs(w).max()
    if gemm:
        nodes = [h.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)]
        inits = {"w": w.T.copy(), "b": np.linspace(-1, 1, n).astype(np.float32)}
        inputs = [("x", [3, k])]
        outputs = [("y", [3, n])]
    else:
        nodes = [
            h.make_node("MatMul", ["x", "w"], ["m"], name="first"),
            h.make_node("Relu", ["m"], ["r"]),
            h.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
        ]
        w2 = weight(n, 8, seed=1)
        if negative_extremes:
            w2[0] = -2 * np.abs(w2).max()
        inits = {"w": w, "w2": w2}
        inputs, outputs = [("x", [2, 5, k])], [("y", [2, 5, 8])]
    return tiny.make_model(nodes, inputs, outputs, inits, infer_shapes=True)


def weight_only(model, **options):
    """Exact float activations (accuracy_level 0) unless a test asks otherwise: formats compare bit-for-bit."""
    options = {"output_layer_bits": 0, "accuracy_level": 0, **options}
    return onnxcomp.compress(model, [("quantize_weight_only", options)], use_cache=False)


def feed(model, seed=0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_matmulnbits_matches_dequantize_plus_matmul(tiny, symmetric, bits):
    model = linear_model(tiny, negative_extremes=True)
    nbits = weight_only(model, bits=bits, symmetric=symmetric, group_size=64).model
    qdq = weight_only(model, bits=bits, symmetric=symmetric, group_size=64, format="qdq").model
    assert "MatMulNBits" in tiny.op_types(nbits) and "DequantizeLinear" in tiny.op_types(qdq)
    for seed in range(3):
        x = feed(model, seed)
        a, b = tiny.run(nbits, x)[0], tiny.run(qdq, x)[0]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("bits", [4, 8])
def test_matmulnbits_runs_negative_scales_and_qdq_keeps_them_positive(tiny, bits):
    """Symmetric MatMulNBits blocks take ONNX Runtime's signed scales; ORT computes x·dequant(W) with
    them; the QDQ format (TensorRT) stores only positive scales."""
    model = linear_model(tiny)
    nbits = weight_only(model, bits=bits, group_size=32).model
    q = quantize_blockwise(tiny.initializer(model, "w"), bits, 32, True, signed_scales=True)
    node = next(n for n in nbits.graph.node if n.name == "first")
    np.testing.assert_array_equal(tiny.initializer(nbits, node.input[2]), q.scales)
    assert (q.scales < 0).any()
    x = feed(model)
    expose = onnx.ModelProto()
    expose.CopyFrom(nbits)
    expose.graph.output.append(h.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    got = tiny.run(expose, x)[-1]
    expected = x["x"] @ dequantize_blockwise(q)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    qdq = weight_only(model, bits=bits, group_size=32, format="qdq").model
    scales = tiny.weight_scales(qdq)
    assert scales and all((s > 0).all() for s in scales)


def test_qdq_weights_reproduce_the_quantized_values_exactly(tiny):
    model = linear_model(tiny)
    result = weight_only(model, format="qdq", group_size=32, symmetric=False)
    q = quantize_blockwise(tiny.initializer(model, "w"), 4, 32, False)
    proto = result.model
    dq = next(
        n for n in proto.graph.node if n.op_type == "DequantizeLinear" and "w_" in n.input[0] and "w2" not in n.input[0]
    )
    expose = onnx.ModelProto()
    expose.CopyFrom(proto)
    expose.graph.output.append(h.make_tensor_value_info(dq.output[0], onnx.TensorProto.FLOAT, None))
    got = tiny.run(expose, feed(model))[-1]
    np.testing.assert_array_equal(got, dequantize_blockwise(q))
    codes, zero_points = signed_codes_kn(q)
    assert codes.shape == (200, 24) and zero_points.shape == (7, 24)  # ceil(200 / 32) blocks


def test_matmulnbits_stores_the_documented_packing(tiny):
    model = linear_model(tiny)
    proto = weight_only(model, group_size=32).model
    node = next(n for n in proto.graph.node if n.op_type == "MatMulNBits" and n.name == "first")
    attrs = {a.name: a.i for a in node.attribute}
    assert attrs == {"K": 200, "N": 24, "bits": 4, "block_size": 32}
    stored = tiny.initializer(proto, node.input[1])
    expected = packed_codes(quantize_blockwise(tiny.initializer(model, "w"), 4, 32, True, signed_scales=True))
    assert stored.shape == (24, 7, 16) and (stored == expected).all()


def test_custom_format_is_structurally_the_same_op(tiny):
    model = linear_model(tiny)
    proto = weight_only(model, format="custom").model
    node = next(n for n in proto.graph.node if n.name == "first")
    assert (node.domain, node.op_type) == ("ai.onnxcomp", "MatMulInt4")
    assert {a.name: a.i for a in node.attribute} == {"K": 200, "N": 24, "bits": 4, "group_size": 128}
    assert any(o.domain == "ai.onnxcomp" for o in proto.opset_import)


def test_gemm_with_transposed_weight_and_bias(tiny):
    model = linear_model(tiny, gemm=True)
    result = weight_only(model, group_size=32, format="qdq")
    x = feed(model)
    q = quantize_blockwise(tiny.initializer(model, "w").T, 4, 32, True)  # Gemm B is [N, K] with transB
    expected = x["x"] @ dequantize_blockwise(q) + tiny.initializer(model, "b")
    np.testing.assert_allclose(tiny.run(result.model, x)[0], expected, rtol=1e-4, atol=1e-5)
    layer = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]["layers"][0]
    assert layer["shape_kn"] == [200, 24] and layer["relative_weight_error"] < 0.1


def test_shared_weight_quantized_once_and_output_layer_bits(tiny):
    nodes = [h.make_node("MatMul", ["x", "w"], ["a"], name="one"), h.make_node("MatMul", ["a", "w"], ["y"], name="two")]
    model = tiny.make_model(nodes, [("x", [2, 32])], [("y", [2, 32])], {"w": weight(32, 32)}, infer_shapes=True)
    result = onnxcomp.compress(model, [("quantize_weight_only", {"group_size": 32})], use_cache=False)
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert [(x["node"], x["bits"]) for x in details["layers"]] == [("one", 4), ("two", 8)]  # "two" feeds the output
    shared = onnxcomp.compress(
        model, [("quantize_weight_only", {"group_size": 32, "output_layer_bits": 0})], use_cache=False
    )
    details = next(p for p in shared.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["weights_quantized"] == 1 and all(x.get("shared_weight") for x in details["layers"])


def test_activation_weights_are_skipped_and_reported(tiny):
    nodes = [h.make_node("MatMul", ["x", "z"], ["y"], name="scores")]
    model = tiny.make_model(nodes, [("x", [2, 4]), ("z", [4, 3])], [("y", [2, 3])])
    result = weight_only(model)
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["skipped"] == [{"node": "scores", "reason": "weight is not a constant"}] and details["layers"] == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bits": 2}, "bits must be one of 4, 8"),
        ({"group_size": 100}, "group_size must be one of 32, 64, 128"),
        ({"format": "gguf"}, "format must be one of matmulnbits, qdq, custom"),
        ({"format": "custom", "bits": 8}, "4-bit only"),
        ({"algorithm": "magic"}, "algorithm must be"),
        ({"symmetric": "yes"}, "symmetric must be true or false"),
        ({"clip_search": 1}, "clip_search must be true or false"),
        ({"exclude": "lm_head"}, "exclude must be a list"),
        ({"output_layer_bits": 3}, "output_layer_bits must be 0"),
        ({"accuracy_level": 7}, "accuracy_level must be 0-4"),
    ],
)
def test_bad_options(tiny, options, message):
    with pytest.raises(OnnxcompError, match=message):
        weight_only(linear_model(tiny), **options)


@pytest.mark.parametrize("symmetric", [True, False])
def test_custom_format_runs_with_the_project_library_like_matmulnbits(tiny, symmetric):
    import onnxruntime as ort

    from onnxcomp.custom_ops import build

    try:
        library = build.library_path(cuda=False)
    except build.BuildError as exc:
        pytest.skip(f"custom-op library cannot be built here: {exc}")
    model = linear_model(tiny)
    outputs = {}
    for fmt in ("custom", "matmulnbits"):
        proto = weight_only(model, format=fmt, group_size=32, symmetric=symmetric).model
        options = ort.SessionOptions()
        options.register_custom_ops_library(str(library))
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs[fmt] = session.run(None, feed(model))[0]
    np.testing.assert_allclose(outputs["custom"], outputs["matmulnbits"], rtol=1e-4, atol=1e-5)


def test_default_accuracy_level_4_stays_close_to_float_activations(tiny):
    model = linear_model(tiny)
    exact = weight_only(model).model
    fast = onnxcomp.compress(model, [("quantize_weight_only", {"output_layer_bits": 0})], use_cache=False).model
    node = next(n for n in fast.graph.node if n.op_type == "MatMulNBits")
    assert {a.name: a.i for a in node.attribute}["accuracy_level"] == 4
    x = feed(model)
    a, b = tiny.run(fast, x)[0], tiny.run(exact, x)[0]
    assert np.linalg.norm(a - b) <= 0.02 * np.linalg.norm(b)  # int8 activations per block inside ORT's kernel


def tied_lm(tiny, vocab=100, hidden=72):
    """ids → Gather(E) → LayerNorm → MatMul(Eᵀ) → logits: the tied embedding / LM head of small LMs.
    hidden 72 with group 32 pads the last block."""
    rng = np.random.default_rng(9)
    table = (rng.standard_normal((vocab, hidden)) * 0.2).astype(np.float32)
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["emb"], axis=0, name="embed"),
        h.make_node("LayerNormalization", ["emb", "gamma", "beta"], ["n"], axis=-1),
        h.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),
        h.make_node("MatMul", ["n", "table_t"], ["logits"], name="lm_head"),
    ]
    inits = {"table": table, "gamma": np.ones(hidden, np.float32), "beta": np.zeros(hidden, np.float32)}
    model = tiny.make_model(
        nodes,
        [h.make_tensor_value_info("ids", onnx.TensorProto.INT64, [2, 5])],
        [("emb", [2, 5, hidden]), ("logits", [2, 5, vocab])],
        inits,
        infer_shapes=True,
    )
    return model, table


@pytest.mark.parametrize("lm_head_bits", [8, 4])
def test_tied_embedding_reads_the_lm_head_codes(tiny, lm_head_bits):
    model, table = tied_lm(tiny)
    options = {"group_size": 32, "output_layer_bits": 0 if lm_head_bits == 4 else 8}
    result = onnxcomp.compress(model, "w4a16-rtn", options={"quantize_weight_only": options}, use_cache=False)
    assert "GatherBlockQuantized" in tiny.op_types(result.model) and "Gather" not in tiny.op_types(result.model)
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["tied_tables"] == [
        {
            "gather": "embed",
            "table": "table",
            "shares": details["layers"][0]["weight"],
            "shared": True,
            "bits": lm_head_bits,
            "group_size": 32,
        }
    ]
    stored = sum(len(i.raw_data) for i in result.model.graph.initializer)
    one_copy = 100 * 3 * 32 * lm_head_bits // 8 + 100 * 3 * 4  # codes of 3 blocks of 32 per row, float scales
    assert one_copy <= stored < one_copy + 2 * 72 * 4 + 200  # + gamma, beta and the int64 shapes: no second table
    ids = np.array([[0, 7, 99, 3, 3], [50, 1, 2, 98, 0]])
    expected = dequantize_blockwise(quantize_blockwise(table.T, lm_head_bits, 32, True, signed_scales=True)).T[ids]
    np.testing.assert_array_equal(tiny.run(result.model, {"ids": ids})[0], expected)


def test_tied_embedding_with_an_asymmetric_recipe_still_shares_the_symmetric_lm_head(tiny):
    model, _ = tied_lm(tiny)
    result = onnxcomp.compress(
        model, "w4a16-rtn", options={"quantize_weight_only": {"group_size": 32, "symmetric": False}}, use_cache=False
    )
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["layers"][0]["symmetric"] and details["tied_tables"][0]["shared"]


@pytest.mark.parametrize(
    "options, reason",
    [({"format": "qdq"}, "qdq format"), ({"symmetric": False, "output_layer_bits": 0}, "zero points")],
)
def test_tied_embedding_the_gather_cannot_read_is_reported_not_shared(tiny, options, reason):
    model, _ = tied_lm(tiny)
    result = onnxcomp.compress(
        model, "w4a16-rtn", options={"quantize_weight_only": {"group_size": 32, **options}}, use_cache=False
    )
    details = next(p for p in result.report["passes"] if p["pass"] == "quantize_weight_only")["details"]
    assert details["tied_tables"][0]["shared"] is False and reason in details["tied_tables"][0]["reason"]
    assert "GatherBlockQuantized" not in tiny.op_types(result.model)
