"""Structured pruning: dependency groups on tiny graphs, the cut itself, the pass and its refusals.

The guarantee under test: cutting a group computes exactly what the unpruned model computes with
the removed channels' activations forced to zero (so removing channels that are zero anyway does
not change the output), the result passes the checker with strict shape inference, and recovery
lowers the error measured in ONNX Runtime.
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.flops import weight_macs
from onnxcomp.ir.modelio import check_model
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.pruning.apply import apply_group
from onnxcomp.pruning.groups import find_groups
from onnxcomp.pruning.params import ParamCounter

HID, FFN = 8, 16


def gated_mlp(tiny, seed=0):
    """x → gate/up → silu(gate)·up → down → + x (a LLaMA MLP with its residual)."""
    rng = np.random.default_rng(seed)
    init = {
        "wg": rng.standard_normal((HID, FFN)).astype(np.float32) * 0.5,
        "wu": rng.standard_normal((HID, FFN)).astype(np.float32) * 0.5,
        "wd": rng.standard_normal((FFN, HID)).astype(np.float32) * 0.5,
    }
    nodes = [
        h.make_node("MatMul", ["x", "wg"], ["g"], name="gate"),
        h.make_node("Sigmoid", ["g"], ["sg"], name="sig"),
        h.make_node("Mul", ["g", "sg"], ["silu"], name="silu"),
        h.make_node("MatMul", ["x", "wu"], ["u"], name="up"),
        h.make_node("Mul", ["silu", "u"], ["gu"], name="gated"),
        h.make_node("MatMul", ["gu", "wd"], ["d"], name="down"),
        h.make_node("Add", ["x", "d"], ["y"], name="residual"),
    ]
    return tiny.make_model(nodes, [("x", ["b", 4, HID])], [("y", ["b", 4, HID])], init, infer_shapes=True)


def small_cnn(tiny, seed=0):
    """Conv(+B) → Relu → Conv → Relu → MaxPool → Reshape[-1, C·4·4] → Gemm(transB)."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": rng.standard_normal((6, 1, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(6).astype(np.float32),
        "w2": rng.standard_normal((5, 6, 3, 3)).astype(np.float32) * 0.3,
        "b2": rng.standard_normal(5).astype(np.float32),
        "shape": np.array([-1, 5 * 16], np.int64),
        "w3": rng.standard_normal((3, 5 * 16)).astype(np.float32) * 0.3,
        "b3": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["img", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Reshape", ["p", "shape"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    return tiny.make_model(nodes, [("img", ["b", 1, 8, 8])], [("logits", ["b", 3])], init, infer_shapes=True)


def _ir(proto):
    return ir.serde.deserialize_model(proto)


def test_gated_mlp_is_one_group_and_the_residual_producer_is_skipped(tiny):
    groups = find_groups(_ir(gated_mlp(tiny)))
    ok = [g for g in groups if not g.reason]
    assert len(ok) == 1 and {p.name for p in ok[0].producers} == {"gate", "up"}
    assert [c.name for c in ok[0].consumers] == ["down"] and ok[0].kind == "ffn"
    skipped = {g.name: g.reason for g in groups if g.reason}
    assert "residual" in skipped["down"]


def test_cutting_a_group_equals_zeroing_its_channels(tiny):
    proto = gated_mlp(tiny)
    keep = np.array([0, 2, 3, 7, 8, 11, 15])
    model = _ir(proto)
    group = next(g for g in find_groups(model) if not g.reason)
    apply_group(group, keep)
    check_model(model, "pruned")
    pruned = ir.to_proto(model)
    zeroed = onnx.ModelProto.FromString(proto.SerializeToString())
    wd = next(i for i in zeroed.graph.initializer if i.name == "wd")
    array = onnx.numpy_helper.to_array(wd).copy()
    array[np.setdiff1d(np.arange(FFN), keep)] = 0
    wd.CopyFrom(onnx.numpy_helper.from_array(array, "wd"))
    x = {"x": np.random.default_rng(3).standard_normal((2, 4, HID)).astype(np.float32)}
    assert np.allclose(tiny.run(pruned, x)[0], tiny.run(zeroed, x)[0], atol=1e-5)
    assert tiny.initializer(pruned, "wg").shape == (HID, len(keep))


def test_cnn_groups_slice_filters_biases_and_the_flatten_shape(tiny):
    proto = small_cnn(tiny)
    model = _ir(proto)
    groups = [g for g in find_groups(model) if not g.reason]
    assert [(g.name, g.kind, g.repeat) for g in groups] == [("conv1", "channels", 1), ("conv2", "channels", 16)]
    # conv2's filters 1 and 3 read nothing: zero them, then removing them changes nothing
    w3 = tiny.initializer(proto, "w3").reshape(3, 5, 16).copy()
    w3[:, [1, 3]] = 0
    proto.graph.initializer[[i.name for i in proto.graph.initializer].index("w3")].CopyFrom(
        onnx.numpy_helper.from_array(w3.reshape(3, 80), "w3")
    )
    model = _ir(proto)
    apply_group([g for g in find_groups(model) if not g.reason][1], np.array([0, 2, 4]))
    check_model(model, "pruned cnn")
    pruned = ir.to_proto(model)
    assert tiny.initializer(pruned, "shape").tolist() == [-1, 48]
    counter = ParamCounter(groups)
    assert counter.total == sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.name not in ("shape", "b3"))
    assert counter.removed_for([6, 3]) == 2 * (16 * 3 + 1 + 6 * 9)  # two filters of conv2, their fc rows
    img = {"img": np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    assert np.allclose(tiny.run(pruned, img)[0], tiny.run(proto, img)[0], atol=1e-5)


def _feeds(n=8):
    rng = np.random.default_rng(5)
    return [{"x": rng.standard_normal((4, 4, HID)).astype(np.float32)} for _ in range(n)]


def test_the_pass_prunes_and_refit_beats_plain_slicing(tiny, tmp_path):
    """Least squares on the calibration statistics lowers the output's mean squared error there."""
    proto = gated_mlp(tiny)
    reference = [tiny.run(proto, feed)[0] for feed in _feeds()]
    errors = {}
    for recovery in ("none", "refit"):
        out = tmp_path / f"{recovery}.onnx"
        options = {"prune_structured": {"sparsity": 0.5, "recovery": recovery}}
        result = onnxcomp.compress(proto, "prune", _feeds(), output=out, options=options, use_cache=False)
        entry = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")
        assert 0.45 <= entry["details"]["sparsity"] <= 0.55
        pruned = onnx.load(out)
        assert tiny.initializer(pruned, "wd").shape[0] == 8
        if recovery == "none":  # the report counts exactly the parameters that left the file
            size = lambda m: sum(int(np.prod(i.dims)) for i in m.graph.initializer)  # noqa: E731
            assert entry["details"]["removed_params"] == size(proto) - size(pruned)
        outputs = [tiny.run(pruned, feed)[0] for feed in _feeds()]
        errors[recovery] = np.mean([np.square(o - r).mean() for o, r in zip(outputs, reference)])
        group = entry["details"]["groups"][0]
        assert group["error_after"] <= group["error_before"] + 1e-9
    assert errors["refit"] < 0.8 * errors["none"]


def test_bad_sparsity_and_too_much_sparsity_are_refused_with_the_maximum(tiny):
    with pytest.raises(OnnxcompError, match=r"sparsity must be a number in \[0, 1\)"):
        PASSES["prune_structured"](Context(), sparsity=1.0)
    with pytest.raises(OnnxcompError, match="the maximum is"):
        PASSES["prune_structured"](Context(), sparsity=0.99, multiple=8, importance="magnitude", recovery="none")(
            _ir(gated_mlp(tiny))
        )


def test_a_model_without_prunable_groups_gets_a_report_not_a_crash(tiny):
    proto = tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="only")],
        [("x", [2, HID])],
        [("y", [2, 3])],
        {"w": np.ones((HID, 3), np.float32)},
    )
    prune = PASSES["prune_structured"](Context(), importance="magnitude", recovery="none")
    result = prune(_ir(proto))
    assert not result.modified and prune.details["note"] == "no prunable group"
    assert "graph output" in prune.details["skipped"][0]["reason"]


@pytest.mark.slow
def test_digits_cnn_half_the_filters_recovery_keeps_accuracy(digits, digits_path, tmp_path):
    """The issue's target: half the conv filters removed, accuracy within 1 point with recovery."""
    accuracy, filters = {}, {}
    for recovery in ("none", "refit"):
        out = tmp_path / f"{recovery}.onnx"
        options = {
            "prune_structured": {
                "sparsity": 0.55, "prune": "channels", "allocation": "uniform", "recovery": recovery, "damp": 0.1,
                "multiple": 1,
            }
        }  # fmt: skip
        onnxcomp.compress(digits_path, "prune", digits.calibration_feeds(1024), output=out, options=options)
        pruned = onnx.load(out)
        filters[recovery] = sum(i.dims[0] for i in pruned.graph.initializer if len(i.dims) == 4)
        session = onnxcomp.runtime.ort_session(pruned.SerializeToString())
        accuracy[recovery] = digits.accuracy(lambda f, s=session: s.run(None, f)[0])
    reference = onnxcomp.runtime.ort_session(str(digits_path))
    fp32 = digits.accuracy(lambda f: reference.run(None, f)[0])
    assert filters["refit"] <= 24  # of 16 + 32
    assert fp32 - accuracy["refit"] <= 0.01 < fp32 - accuracy["none"]


def test_the_prune_preset_keeps_conv_filters_in_blocks_of_16(digits, digits_path, tmp_path):
    """ONNX Runtime's CPU Conv runs in NCHWc blocks of 16 channels: the default keeps whole blocks
    (14 and 28 filters made the pruned CNN slower than its input) and prunes the rest elsewhere."""
    out = tmp_path / "pruned.onnx"
    result = onnxcomp.compress(digits_path, "prune", digits.calibration_feeds(256), output=out)
    entry = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")
    pruned = onnx.load(out)
    filters = [i.dims[0] for i in pruned.graph.initializer if len(i.dims) == 4]
    assert filters and all(f % 16 == 0 for f in filters)
    assert entry["details"]["removed_params"] > 0
    with pytest.raises(OnnxcompError, match="multiple must be a positive integer or 'auto'"):
        PASSES["prune_structured"](Context(), multiple="8")


def test_weight_macs_count_convs_per_output_pixel_and_shrink_with_pruning(tiny):
    model = _ir(small_cnn(tiny))
    assert weight_macs(model) == 6 * 9 * 64 + 5 * 6 * 9 * 64 + 3 * 80
    apply_group(next(g for g in find_groups(model) if not g.reason), np.array([0, 1, 2]))
    assert weight_macs(model) == 3 * 9 * 64 + 5 * 3 * 9 * 64 + 3 * 80


def attention(tiny, heads=4, dim=2, seed=0):
    """x → Q/K/V (+bias) → split [0, 0, −1, d] → softmax(QKᵀ·s + mask) V → merge [0, 0, −1] → O → + x."""
    rng = np.random.default_rng(seed)
    hid = heads * dim
    init = {f"w{n}": rng.standard_normal((hid, hid)).astype(np.float32) * 0.5 for n in "qkvo"}
    init.update({f"b{n}": rng.standard_normal(hid).astype(np.float32) for n in "qkv"})
    init.update(split=np.array([0, 0, -1, dim], np.int64), merge=np.array([0, 0, -1], np.int64))
    init["scale"] = np.array(dim**-0.5, np.float32)
    nodes = []
    for n in "qkv":
        nodes += [
            h.make_node("MatMul", ["x", f"w{n}"], [f"{n}0"], name=f"{n}_proj"),
            h.make_node("Add", [f"{n}0", f"b{n}"], [f"{n}1"], name=f"{n}_bias"),
            h.make_node("Reshape", [f"{n}1", "split"], [f"{n}2"], name=f"{n}_split"),
            h.make_node(
                "Transpose", [f"{n}2"], [f"{n}3"], name=f"{n}_t", perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]
            ),
        ]
    nodes += [
        h.make_node("MatMul", ["q3", "k3"], ["s0"], name="scores"),
        h.make_node("Mul", ["s0", "scale"], ["s1"], name="scaled"),
        h.make_node("Add", ["s1", "mask"], ["s2"], name="masked"),
        h.make_node("Softmax", ["s2"], ["p"], name="softmax", axis=-1),
        h.make_node("MatMul", ["p", "v3"], ["a0"], name="context"),
        h.make_node("Transpose", ["a0"], ["a1"], name="merge_t", perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["a1", "merge"], ["a2"], name="merge"),
        h.make_node("MatMul", ["a2", "wo"], ["o"], name="o_proj"),
        h.make_node("Add", ["x", "o"], ["y"], name="residual"),
    ]
    inputs = [("x", ["b", "s", hid]), ("mask", ["b", 1, "s", "s"])]
    return tiny.make_model(nodes, inputs, [("y", ["b", "s", hid])], init, infer_shapes=True)


def test_attention_heads_are_one_group_and_cutting_them_equals_zeroing_their_o_rows(tiny):
    proto = attention(tiny)
    model = _ir(proto)
    heads = [g for g in find_groups(model) if g.kind == "heads"]
    assert len(heads) == 1 and not heads[0].reason
    assert (heads[0].channels, heads[0].block, [c.name for c in heads[0].consumers]) == (4, 2, ["o_proj"])
    wo = tiny.initializer(proto, "wo").copy()
    wo[[2, 3, 6, 7]] = 0  # heads 1 and 3 contribute nothing
    proto.graph.initializer[[i.name for i in proto.graph.initializer].index("wo")].CopyFrom(
        onnx.numpy_helper.from_array(wo, "wo")
    )
    model = _ir(proto)
    apply_group(next(g for g in find_groups(model) if g.kind == "heads"), np.array([0, 2]))
    check_model(model, "pruned attention")
    pruned = ir.to_proto(model)
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((2, 3, 8)).astype(np.float32), "mask": np.zeros((2, 1, 3, 3), np.float32)}
    assert np.allclose(tiny.run(pruned, feed)[0], tiny.run(proto, feed)[0], atol=1e-5)
    assert tiny.initializer(pruned, "wq").shape == (8, 4) and tiny.initializer(pruned, "wo").shape == (4, 8)


def test_cli_refuses_a_bad_sparsity_and_pruning_options_on_other_recipes(tiny, tmp_path):
    from click.testing import CliRunner

    from onnxcomp.cli import cli

    model, out = tmp_path / "mlp.onnx", tmp_path / "out.onnx"
    onnx.save(gated_mlp(tiny), model)
    (tmp_path / "calib").mkdir()
    for i, feed in enumerate(_feeds(2)):
        np.savez(tmp_path / "calib" / f"{i}.npz", **feed)
    runner = CliRunner()
    for args, message in (
        (["--recipe", "prune", "--sparsity", "1.5"], "sparsity must be a number in [0, 1)"),
        (["--recipe", "prune", "--sparsity", "0.99", "--importance", "magnitude"], "the maximum is"),
        (["--recipe", "int8", "--sparsity", "0.2"], "apply to pruning recipes"),
    ):
        result = runner.invoke(cli, ["compress", str(model), "-o", str(out), "--calib", str(tmp_path / "calib"), *args])
        assert result.exit_code == 2 and message in result.output and result.output.startswith("error:")
        assert not out.exists()
    args = ["compress", str(model), "-o", str(out), "--calib", str(tmp_path / "calib"), "--recipe", "prune"]
    result = runner.invoke(cli, [*args, "--sparsity", "0.5", "--importance", "obs"])
    assert result.exit_code == 0, result.output
    assert tiny.initializer(onnx.load(out), "wd").shape[0] == 8


def test_sequential_recovery_with_two_groups_of_different_widths(tiny, tmp_path):
    """Attention heads (O reads 8 columns) then a gated MLP (down reads 16): each consumer's
    sequential moments are its own, and refit lowers both groups' errors."""
    rng = np.random.default_rng(0)
    att = attention(tiny)
    mlp_init = {
        "wg": rng.standard_normal((HID, FFN)).astype(np.float32) * 0.5,
        "wu": rng.standard_normal((HID, FFN)).astype(np.float32) * 0.5,
        "wd": rng.standard_normal((FFN, HID)).astype(np.float32) * 0.5,
    }
    graph = att.graph
    graph.output[0].name = "y2"
    graph.node[-1].output[0] = "y1"
    graph.node.extend(
        [
            h.make_node("MatMul", ["y1", "wg"], ["g"], name="gate"),
            h.make_node("Sigmoid", ["g"], ["sg"], name="sig"),
            h.make_node("Mul", ["g", "sg"], ["silu"], name="silu"),
            h.make_node("MatMul", ["y1", "wu"], ["u"], name="up"),
            h.make_node("Mul", ["silu", "u"], ["Agu"], name="gated"),  # sorts before "a2"
            h.make_node("MatMul", ["Agu", "wd"], ["d"], name="down"),
            h.make_node("Add", ["y1", "d"], ["y2"], name="residual2"),
        ]
    )
    graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in mlp_init.items())
    del graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(att, strict_mode=True)
    feeds = [
        {"x": rng.standard_normal((2, 3, HID)).astype(np.float32), "mask": np.zeros((2, 1, 3, 3), np.float32)}
        for _ in range(6)
    ]
    options = {"prune_structured": {"sparsity": 0.4, "prune": "heads,ffn"}}
    result = onnxcomp.compress(proto, "prune", feeds, output=tmp_path / "o.onnx", options=options, use_cache=False)
    groups = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")["details"]["groups"]
    assert {g["kind"] for g in groups} == {"heads", "ffn"}
    assert all(g["error_after"] <= g["error_before"] for g in groups if "error_before" in g)


def gqa_attention(tiny, layers=2, heads=9, kv=3, dim=4, seed=0):
    """`layers` LLaMA attention blocks with grouped-query attention as torch exports them: Q
    (heads·dim) and K/V (kv·dim) split [0, 0, −1, d], rotary Slice/Neg/Concat with cos/sin
    inputs, K/V Unsqueeze → Expand [B, kv, r, S, d] → Reshape [B, heads, S, d]; the Expand and
    Reshape shapes are Concats of Shape pieces and constants shared by every layer."""
    rng = np.random.default_rng(seed)
    widths = (("q", heads * dim), ("k", kv * dim), ("v", kv * dim))
    init = {
        f"w{n}{i}": rng.standard_normal((HID, w)).astype(np.float32) * 0.5 for i in range(layers) for n, w in widths
    }
    init.update({f"wo{i}": rng.standard_normal((heads * dim, HID)).astype(np.float32) * 0.5 for i in range(layers)})
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    init.update(split=i64(0, 0, -1, dim), merge=i64(0, 0, -1), kv=i64(kv), rep=i64(heads // kv), d=i64(dim))
    init.update(heads=i64(heads), zero=i64(0), half=i64(dim // 2), end=i64(dim), ax3=i64(3), ax2=i64(2))
    init["scale"] = np.array(dim**-0.5, np.float32)
    nodes = [
        h.make_node("Shape", ["x"], ["bdim"], start=0, end=1),
        h.make_node("Shape", ["x"], ["sdim"], start=1, end=2),
        h.make_node("Concat", ["bdim", "kv", "rep", "sdim", "d"], ["rep_shape"], axis=0),
        h.make_node("Concat", ["bdim", "heads", "sdim", "d"], ["heads_shape"], axis=0),
    ]
    x = "x"
    for i in range(layers):
        p = f"l{i}_"

        def rope(t):
            return [
                h.make_node("Slice", [t, "zero", "half", "ax3"], [t + "a"]),
                h.make_node("Slice", [t, "half", "end", "ax3"], [t + "b"]),
                h.make_node("Neg", [t + "b"], [t + "n"]),
                h.make_node("Concat", [t + "n", t + "a"], [t + "c"], axis=-1),
                h.make_node("Mul", [t, "cos"], [t + "m1"]),
                h.make_node("Mul", [t + "c", "sin"], [t + "m2"]),
                h.make_node("Add", [t + "m1", t + "m2"], [t + "r"]),
            ]

        for n in "qkv":
            nodes += [
                h.make_node("MatMul", [x, f"w{n}{i}"], [p + n + "0"], name=p + n + "_proj"),
                h.make_node("Reshape", [p + n + "0", "split"], [p + n + "1"]),
                h.make_node("Transpose", [p + n + "1"], [p + n + "2"], perm=[0, 2, 1, 3]),
            ]
        nodes += rope(p + "q2") + rope(p + "k2")
        for n, t in (("k", p + "k2r"), ("v", p + "v2")):
            nodes += [
                h.make_node("Unsqueeze", [t, "ax2"], [p + n + "u"]),
                h.make_node("Expand", [p + n + "u", "rep_shape"], [p + n + "e"], name=p + n + "_expand"),
                h.make_node("Reshape", [p + n + "e", "heads_shape"], [p + n + "h"], name=p + n + "_repeat"),
            ]
        nodes += [
            h.make_node("Transpose", [p + "kh"], [p + "kt"], perm=[0, 1, 3, 2]),
            h.make_node("MatMul", [p + "q2r", p + "kt"], [p + "s0"]),
            h.make_node("Mul", [p + "s0", "scale"], [p + "s1"]),
            h.make_node("Add", [p + "s1", "mask"], [p + "s2"]),
            h.make_node("Softmax", [p + "s2"], [p + "p"], axis=-1),
            h.make_node("MatMul", [p + "p", p + "vh"], [p + "a0"]),
            h.make_node("Transpose", [p + "a0"], [p + "a1"], perm=[0, 2, 1, 3]),
            h.make_node("Reshape", [p + "a1", "merge"], [p + "a2"]),
            h.make_node("MatMul", [p + "a2", f"wo{i}"], [p + "o"], name=f"{p}o_proj"),
            h.make_node("Add", [x, p + "o"], [p + "y"]),
        ]
        x = p + "y"
    nodes.append(h.make_node("Identity", [x], ["y"]))
    rot = [1, 1, "s", dim]
    inputs = [("x", ["b", "s", HID]), ("mask", ["b", 1, "s", "s"]), ("cos", rot), ("sin", rot)]
    proto = tiny.make_model(nodes, inputs, [("y", ["b", "s", HID])], init)
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)  # the exporter's shapes


def _gqa_feed(rng, s=5):
    angle = rng.uniform(0, 3, (1, 1, s, 4)).astype(np.float32)
    x = rng.standard_normal((2, s, HID)).astype(np.float32)
    return {"x": x, "mask": np.zeros((2, 1, s, s), np.float32), "cos": np.cos(angle), "sin": np.sin(angle)}


def test_grouped_query_heads_cut_equals_zeroing_and_shared_shapes_are_unshared(tiny):
    proto = gqa_attention(tiny)
    model = _ir(proto)
    heads = [g for g in find_groups(model) if g.kind == "heads"]
    assert [(g.reason, g.channels, g.kv_heads, [p.name for p in g.producers]) for g in heads] == [
        ("", 9, 3, ["l0_q_proj"]),
        ("", 9, 3, ["l1_q_proj"]),
    ]
    assert sorted((e.node.name, e.index, str(e.per)) for e in heads[0].entries) == [
        ("l0_k_expand", 2, "1/3"),
        ("l0_k_repeat", 1, "1"),
        ("l0_v_expand", 2, "1/3"),
        ("l0_v_repeat", 1, "1"),
    ]
    wo = tiny.initializer(proto, "wo0").copy()
    wo[4:8] = wo[16:20] = wo[32:36] = 0  # query heads 1, 4 and 8 (one per KV head) contribute nothing
    proto.graph.initializer[[i.name for i in proto.graph.initializer].index("wo0")].CopyFrom(
        onnx.numpy_helper.from_array(wo, "wo0")
    )
    model = _ir(proto)
    apply_group(next(g for g in find_groups(model) if g.kind == "heads"), np.array([0, 2, 3, 5, 6, 7]))
    check_model(model, "pruned grouped-query attention")
    pruned = ir.to_proto(model)
    feed = _gqa_feed(np.random.default_rng(1))
    assert np.allclose(tiny.run(pruned, feed)[0], tiny.run(proto, feed)[0], atol=1e-5)
    assert tiny.initializer(pruned, "wq0").shape == (HID, 24) and tiny.initializer(pruned, "wo0").shape == (24, HID)
    assert tiny.initializer(pruned, "wk0").shape == (HID, 12) and tiny.initializer(pruned, "wq1").shape == (HID, 36)


def test_prune_pass_keeps_query_heads_in_equal_numbers_per_kv_head(tiny, tmp_path):
    proto = gqa_attention(tiny, layers=1)
    index = [i.name for i in proto.graph.initializer].index("wo0")
    wo = tiny.initializer(proto, "wo0").copy()
    wo[:12] *= 0.01  # KV head 0's query heads score lowest: a plain ranking would remove all three
    proto.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(wo, "wo0"))
    rng = np.random.default_rng(0)
    feeds = [_gqa_feed(rng) for _ in range(4)]
    options = {"prune_structured": {"sparsity": 0.3, "prune": "heads"}}
    out = tmp_path / "o.onnx"
    result = onnxcomp.compress(proto, "prune", feeds, output=out, options=options, use_cache=False)
    groups = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")["details"]["groups"]
    assert [(g["kind"], g["channels"], g["kept"]) for g in groups] == [("heads", 9, 6)]
    assert groups[0]["error_after"] <= groups[0]["error_before"]
    pruned = onnx.load(out)
    wq, kept = tiny.initializer(proto, "wq0"), tiny.initializer(pruned, "wq0")
    heads = [next(h for h in range(9) if np.array_equal(kept[:, 4 * j], wq[:, 4 * h])) for j in range(6)]
    assert [h // 3 for h in heads] == [0, 0, 1, 1, 2, 2]  # two query heads of each KV head
    assert tiny.run(pruned, feeds[0])[0].shape == (2, 5, HID)


def test_input_moments_leave_padding_positions_out(tiny):
    """Rows the feed's attention_mask marks as padding (here filled with 1000) are not counted."""
    from onnxcomp.pruning.sequential import input_moments

    nodes = [
        h.make_node("Relu", ["x"], ["r"]),
        h.make_node("Cast", ["attention_mask"], ["m"], to=onnx.TensorProto.FLOAT),
        h.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        h.make_node("Mul", ["r", "m3"], ["y"]),
    ]
    mask_input = h.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, ["b", "s"])
    proto = tiny.make_model(
        nodes, [("x", ["b", "s", 2]), mask_input], [("y", ["b", "s", 2])], {"axis": np.array([-1], np.int64)}
    )
    x = np.array([[[1.0, 2.0], [3.0, 4.0], [1000.0, 1000.0]]], np.float32)
    feeds = [{"x": x, "attention_mask": np.array([[1, 1, 0]], np.int64)}]
    moments = input_moments(_ir(proto), ["r"], feeds)["r"]
    assert np.allclose(moments.mean, [2.0, 3.0]) and np.allclose(moments.second, (x[0, :2].T @ x[0, :2]) / 2)


def test_head_counts_in_constant_split_and_merge_shapes_are_rewritten(tiny):
    proto = attention(tiny)
    for init in proto.graph.initializer:
        if init.name in ("split", "merge"):
            value = [0, 0, 4, 2] if init.name == "split" else [0, 0, 8]
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(value, np.int64), init.name))
    wo = tiny.initializer(proto, "wo").copy()
    wo[[2, 3, 6, 7]] = 0
    proto.graph.initializer[[i.name for i in proto.graph.initializer].index("wo")].CopyFrom(
        onnx.numpy_helper.from_array(wo, "wo")
    )
    model = _ir(proto)
    group = next(g for g in find_groups(model) if g.kind == "heads")
    assert not group.reason and len(group.entries) == 4  # three splits and the merge
    apply_group(group, np.array([0, 2]))
    check_model(model, "pruned attention")
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)
    feed = {"x": x, "mask": np.zeros((2, 1, 3, 3), np.float32)}
    assert np.allclose(tiny.run(ir.to_proto(model), feed)[0], tiny.run(proto, feed)[0], atol=1e-5)


def attention_mlp(tiny):
    """The attention block (4 heads of 2) followed by the gated MLP: one heads and one ffn group."""
    first, second = attention(tiny), gated_mlp(tiny)
    second = onnx.compose.add_prefix(second, "m_")
    merged = onnx.compose.merge_models(first, second, io_map=[("y", "m_x")])
    return onnx.shape_inference.infer_shapes(merged, strict_mode=True)


def _attention_feeds(n=4):
    rng = np.random.default_rng(3)
    mask = np.zeros((2, 1, 4, 4), np.float32)
    return [{"x": rng.standard_normal((2, 4, HID)).astype(np.float32), "mask": mask} for _ in range(n)]


def test_head_sparsity_fixes_the_heads_removed_and_the_mlp_takes_the_rest(tiny, tmp_path):
    """Heads 70 parameters each (Q/K/V/O 4·8·2 + 3·2 biases), MLP neurons 24: 30 % of 664 is 199;
    head_sparsity 0.5 takes 2 heads (140), the MLP the rest (3 neurons: the least count reaching it)."""
    proto = attention_mlp(tiny)
    kept = {}
    for heads in (None, 0.5):
        opts = {"sparsity": 0.3, "prune": "heads,ffn", "importance": "obs", "head_sparsity": heads}
        out = tmp_path / f"{heads}.onnx"
        result = onnxcomp.compress(
            proto, "prune", _attention_feeds(), output=out, options={"prune_structured": opts}, use_cache=False
        )
        details = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")["details"]
        kept[heads] = {g["kind"]: g["kept"] for g in details["groups"]}
        assert abs(details["removed_params"] - 199) <= 24
        assert tiny.run(onnx.load(out), _attention_feeds()[0])[0].shape == (2, 4, HID)
    assert kept[0.5] == {"heads": 2, "ffn": 13}
    assert kept[None]["heads"] == 3  # the same fraction everywhere: 2.8 heads kept, rounded


def test_head_sparsity_is_refused_when_it_cannot_meet_the_sparsity(tiny):
    model = _ir(attention_mlp(tiny))
    prune = lambda **o: PASSES["prune_structured"](  # noqa: E731
        Context(), prune="heads,ffn", importance="magnitude", recovery="none", **o
    )
    with pytest.raises(OnnxcompError, match="head_sparsity 0.75 alone removes more than sparsity 0.1"):
        prune(sparsity=0.1, head_sparsity=0.75)(model)
    with pytest.raises(OnnxcompError, match="with head_sparsity 0 the maximum sparsity is 0.54"):
        prune(sparsity=0.6, head_sparsity=0)(model)
    with pytest.raises(OnnxcompError, match=r"head_sparsity must be a number in \[0, 1\)"):
        prune(head_sparsity=1)
    with pytest.raises(OnnxcompError, match="head_sparsity needs allocation uniform"):
        prune(head_sparsity=0.25, allocation="global")


@pytest.mark.parametrize("quiet", [0, 1])
def test_head_layers_cuts_heads_where_the_residual_stream_moves_least(tiny, tmp_path, quiet):
    """Two GQA layers, one with its O scaled down 20×: with head_layers 0.5 only that layer loses
    its third of the heads (3 query heads × (Q 8·4 + O 4·8) = 192 of 1152 parameters)."""
    proto = gqa_attention(tiny)
    index = [i.name for i in proto.graph.initializer].index(f"wo{quiet}")
    wo = tiny.initializer(proto, f"wo{quiet}") * 0.05
    proto.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(wo, f"wo{quiet}"))
    rng = np.random.default_rng(0)
    feeds = [_gqa_feed(rng) for _ in range(4)]
    opts = {"sparsity": 1 / 6, "prune": "heads", "head_sparsity": 1 / 3, "head_layers": 0.5}
    result = onnxcomp.compress(
        proto, "prune", feeds, output=tmp_path / "o.onnx", options={"prune_structured": opts}, use_cache=False
    )
    details = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")["details"]
    assert [g["kept"] for g in details["groups"]] == [6 if i == quiet else 9 for i in range(2)]
    assert [c["cut"] for c in details["head_layers"]] == [i == quiet for i in range(2)]
    assert details["removed_params"] == 192
    with pytest.raises(OnnxcompError, match="head_layers needs head_sparsity"):
        PASSES["prune_structured"](Context(), head_layers=0.5)
    with pytest.raises(OnnxcompError, match=r"head_layers must be a number in \(0, 1\]"):
        PASSES["prune_structured"](Context(), head_layers=0, head_sparsity=0.3)


def depthwise_cnn(tiny, multiplier=1, seed=0):
    """Conv(6) → Relu → depthwise Conv (group 6, bias) → Relu → Conv(5) → Relu → GlobalAveragePool."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": rng.standard_normal((6, 1, 3, 3)).astype(np.float32),
        "dw": rng.standard_normal((6 * multiplier, 1, 3, 3)).astype(np.float32),
        "db": rng.standard_normal(6 * multiplier).astype(np.float32),
        "w2": rng.standard_normal((5, 6 * multiplier, 1, 1)).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["img", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "dw", "db"], ["d"], name="depthwise", pads=[1, 1, 1, 1], group=6),
        h.make_node("Relu", ["d"], ["r2"], name="relu2"),
        h.make_node("Conv", ["r2", "w2"], ["c2"], name="pointwise"),
        h.make_node("GlobalAveragePool", ["c2"], ["out"], name="pool"),
    ]
    return tiny.make_model(nodes, [("img", ["b", 1, 8, 8])], [("out", ["b", 5, 1, 1])], init, infer_shapes=True)


def test_a_depthwise_conv_is_cut_with_the_filters_it_reads(tiny):
    """conv1's channels 1 and 3 feed nothing (the pointwise conv's rows are zero): cutting them
    also cuts their depthwise filters and bias and sets group = 4, and the output is unchanged."""
    proto = depthwise_cnn(tiny)
    index = [i.name for i in proto.graph.initializer].index("w2")
    w2 = tiny.initializer(proto, "w2").copy()
    w2[:, [1, 3]] = 0
    proto.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(w2, "w2"))
    model = _ir(proto)
    groups = [g for g in find_groups(model) if not g.reason]
    assert [(g.name, [c.name for c in g.consumers]) for g in groups] == [("conv1", ["pointwise"])]
    assert ParamCounter(groups).total == 6 * 9 + 6 * 9 + 6 + 5 * 6  # conv1, depthwise filters + bias, pointwise
    apply_group(groups[0], np.array([0, 2, 4, 5]))
    check_model(model, "pruned depthwise")
    pruned = ir.to_proto(model)
    feed = {"img": np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    assert np.allclose(tiny.run(pruned, feed)[0], tiny.run(proto, feed)[0], atol=1e-5)
    assert tiny.initializer(pruned, "dw").shape == (4, 1, 3, 3) and tiny.initializer(pruned, "db").shape == (4,)
    assert next(n for n in pruned.graph.node if n.name == "depthwise").attribute[0].i == 4


def test_a_depthwise_conv_with_a_channel_multiplier_and_a_concat_of_unknown_width_are_reported(tiny):
    reasons = [g.reason for g in find_groups(_ir(depthwise_cnn(tiny, multiplier=2)))]
    assert "depthwise Conv depthwise has a channel multiplier or reads another layout" in reasons
    rng = np.random.default_rng(0)
    init = {"wa": rng.standard_normal((HID, HID)).astype(np.float32)}
    init["wd"] = rng.standard_normal((2 * HID, HID)).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "wa"], ["a"], name="a"),
        h.make_node("Concat", ["a", "z"], ["az"], name="concat", axis=-1),
        h.make_node("MatMul", ["az", "wd"], ["y"], name="d"),
    ]
    proto = tiny.make_model(nodes, [("x", [2, HID]), ("z", [2, "n"])], [("y", [2, HID])], init, infer_shapes=True)
    reasons = {g.name: g.reason for g in find_groups(_ir(proto))}
    assert reasons["a"] == "Concat concat: the channel count of input 1 is unknown"


def test_whole_kv_groups_cut_equals_zeroing_their_query_heads(tiny):
    """kv_groups: a channel is one KV head with its 3 query heads; K/V lose that head's columns,
    the Expand's KV count and the repeat Reshape's head count shrink, the rest equals zeroing
    O's rows of the removed group's query heads."""
    proto = gqa_attention(tiny)
    heads = [g for g in find_groups(_ir(proto), kv_groups=True) if g.kind == "heads"]
    assert [(g.reason, g.channels, g.repeat, [p.name for p in g.producers]) for g in heads] == [
        ("", 3, 12, ["l0_q_proj", "l0_k_proj", "l0_v_proj"]),
        ("", 3, 12, ["l1_q_proj", "l1_k_proj", "l1_v_proj"]),
    ]
    assert sorted((e.node.name, e.index, str(e.per)) for e in heads[0].entries) == [
        ("l0_k_expand", 1, "1"),
        ("l0_k_repeat", 1, "3"),
        ("l0_v_expand", 1, "1"),
        ("l0_v_repeat", 1, "3"),
    ]
    wo = tiny.initializer(proto, "wo0").copy()
    wo[12:24] = 0  # query heads 3–5, the ones KV head 1 serves, contribute nothing
    proto.graph.initializer[[i.name for i in proto.graph.initializer].index("wo0")].CopyFrom(
        onnx.numpy_helper.from_array(wo, "wo0")
    )
    model = _ir(proto)
    group = next(g for g in find_groups(model, kv_groups=True) if g.kind == "heads")
    counter = ParamCounter([group])
    apply_group(group, np.array([0, 2]))
    check_model(model, "pruned KV groups")
    pruned = ir.to_proto(model)
    feed = _gqa_feed(np.random.default_rng(1))
    assert np.allclose(tiny.run(pruned, feed)[0], tiny.run(proto, feed)[0], atol=1e-5)
    assert tiny.initializer(pruned, "wq0").shape == (HID, 24) and tiny.initializer(pruned, "wo0").shape == (24, HID)
    assert tiny.initializer(pruned, "wk0").shape == (HID, 8) and tiny.initializer(pruned, "wv0").shape == (HID, 8)
    assert tiny.initializer(pruned, "wk1").shape == (HID, 12)
    assert counter.removed_for([2]) == HID * 12 + 2 * HID * 4 + 12 * HID


def test_prune_pass_with_kv_groups_removes_the_weakest_kv_group_whole(tiny, tmp_path):
    proto = gqa_attention(tiny, layers=1)
    index = [i.name for i in proto.graph.initializer].index("wo0")
    wo = tiny.initializer(proto, "wo0").copy()
    wo[12:24] *= 0.01  # KV head 1's query heads matter least
    proto.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(wo, "wo0"))
    rng = np.random.default_rng(0)
    feeds = [_gqa_feed(rng) for _ in range(4)]
    options = {"prune_structured": {"sparsity": 0.3, "prune": "heads", "kv_groups": True}}
    out = tmp_path / "o.onnx"
    result = onnxcomp.compress(proto, "prune", feeds, output=out, options=options, use_cache=False)
    groups = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")["details"]["groups"]
    assert [(g["kind"], g["channels"], g["kept"]) for g in groups] == [("heads", 3, 2)]
    pruned = onnx.load(out)
    wk, kept = tiny.initializer(proto, "wk0"), tiny.initializer(pruned, "wk0")
    assert np.array_equal(kept, wk[:, [0, 1, 2, 3, 8, 9, 10, 11]])  # KV heads 0 and 2 kept
    assert tiny.initializer(pruned, "wq0").shape == (HID, 24)
    assert tiny.run(pruned, feeds[0])[0].shape == (2, 5, HID)
