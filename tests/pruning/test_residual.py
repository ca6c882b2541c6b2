"""Residual-tied channels: every producer whose output meets at a residual Add is one group.

A small ResNet (random weights and BatchNorm statistics, exported by torch like the zoo models,
then canonicalized: BatchNorm folded) has two residual streams: the stem's channels with the
first block's last conv, and the second block's last conv with its 1×1 projection and the third
block's last conv. Cutting a stream computes what the unpruned model computes with every
consumer's rows of the removed channels zeroed; the result passes the checker with strict shape
inference. Streams that reach a graph output, a norm over channels or a Reshape that is not a
flatten are left whole with the reason.
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h

from onnxcomp.ir.modelio import check_model
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.passes.recipes import load_recipe
from onnxcomp.pruning.apply import apply_group, consumer_rows
from onnxcomp.pruning.groups import find_groups
from onnxcomp.pruning.params import ParamCounter

C = 8


def _resnet(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.proj is None else self.proj(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, C, 3, 1, 1), nn.BatchNorm2d(C), nn.ReLU())
            self.blocks = nn.Sequential(Block(C, C, 1), Block(C, 2 * C, 2), Block(2 * C, 2 * C, 1))
            self.fc = nn.Linear(2 * C, 10)

        def forward(self, image):
            x = self.blocks(self.stem(image))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    net = ResNet()
    for module in net.modules():  # BatchNorm statistics as after training: folding gives real biases
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            assert module.weight.shape == (n,)
    return net.eval()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """The canonicalized ResNet as a ModelProto (exported once per module)."""
    torch = pytest.importorskip("torch")
    from onnxcomp.tools.export import export_module

    path = tmp_path_factory.mktemp("resnet") / "resnet.onnx"
    export_module(_resnet(torch), {"image": torch.randn(2, 1, 8, 8)}, path, {"image": {0: "batch"}}, None, ["logits"])
    model = ir.load(str(path))
    for name, opts in load_recipe("canonicalize"):
        PASSES[name](Context(), **opts)(model)
    return ir.to_proto(model)


def _streams(model):
    return [g for g in find_groups(model) if not g.reason and g.residual]


def _convs(proto):
    """Conv node names in graph order: stem, (c1, c2) per block with block 2's projection after its c2."""
    return [n.name for n in proto.graph.node if n.op_type == "Conv"]


def test_each_residual_stream_is_one_group_of_its_producers_and_every_reader(resnet):
    stem, b1c1, b1c2, b2c1, b2c2, proj, b3c1, b3c2 = _convs(resnet)
    fc = next(n.name for n in resnet.graph.node if n.op_type == "Gemm")
    groups = find_groups(ir.from_proto(resnet))
    streams = [g for g in groups if g.residual]
    found = [({p.name for p in g.producers}, {c.name for c in g.consumers}, g.reason) for g in streams]
    assert found == [
        ({stem, b1c2}, {b1c1, b2c1, proj}, ""),
        ({b2c2, proj, b3c2}, {b3c1, fc}, ""),
    ]
    inner = {g.name: [c.name for c in g.consumers] for g in groups if not g.residual and not g.reason}
    assert inner == {b1c1: [b1c2], b2c1: [b2c2], b3c1: [b3c2]}
    assert [g.channels for g in streams] == [C, 2 * C]


def _zero_rows(proto, group, keep):
    """A copy of `proto` with every consumer's input rows of the channels not in `keep` zeroed."""
    zeroed = onnx.ModelProto.FromString(proto.SerializeToString())
    drop = np.setdiff1d(np.arange(group.channels), keep)
    names = [i.name for i in zeroed.graph.initializer]
    for consumer in group.consumers:
        index = names.index(consumer.weight.name)
        array = onnx.numpy_helper.to_array(zeroed.graph.initializer[index]).copy()
        rows = consumer_rows(group, drop)
        array[(slice(None),) * consumer.in_axis + (rows,)] = 0
        zeroed.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(array, consumer.weight.name))
    return zeroed


def test_cutting_both_streams_equals_zeroing_their_readers(resnet, tiny):
    keeps = [np.array([0, 2, 3, 6]), np.array([1, 2, 4, 7, 8, 9, 13, 15])]
    zeroed = resnet
    for group, keep in zip(_streams(ir.from_proto(resnet)), keeps):
        zeroed = _zero_rows(zeroed, group, keep)
    model = ir.from_proto(onnx.ModelProto.FromString(zeroed.SerializeToString()))
    streams = _streams(model)
    counter = ParamCounter(streams)
    for group, keep in zip(streams, keeps):
        apply_group(group, keep)
    check_model(model, "pruned resnet")  # checker + strict shape inference
    pruned = ir.to_proto(model)
    feed = {"image": np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)}
    reference = tiny.run(zeroed, feed)[0]
    assert np.abs(reference - tiny.run(resnet, feed)[0]).max() > 1e-2  # the zeroing changed the output
    assert np.allclose(tiny.run(pruned, feed)[0], reference, atol=1e-5)
    stem, *_ = _convs(pruned)
    weights = {n.name: tiny.initializer(pruned, n.input[1]).shape for n in pruned.graph.node if n.op_type == "Conv"}
    assert weights[stem] == (4, 1, 3, 3) and sorted(weights.values())[0][0] == 4
    assert sum(int(np.prod(i.dims)) for i in pruned.graph.initializer) < sum(
        int(np.prod(i.dims)) for i in resnet.graph.initializer
    )
    assert counter.removed_for([len(k) for k in keeps]) > 0


def test_the_prune_pass_cuts_the_streams_and_recovery_runs(resnet, tiny):
    model = ir.from_proto(resnet)
    feeds = [{"image": np.random.default_rng(i).standard_normal((8, 1, 8, 8)).astype(np.float32)} for i in range(2)]
    context = Context(calibration=feeds)
    PASSES["calibrate"](context)(model)
    step = PASSES["prune_structured"](context, sparsity=0.4, prune="channels", multiple=1, importance="magnitude")
    step(model)
    kept = {g["group"]: g["kept"] for g in step.details["groups"]}
    streams = [name for name in kept if "+" in name]
    assert len(streams) == 2 and all(kept[s] < c for s, c in zip(streams, (C, 2 * C)))
    check_model(model, "pruned resnet")
    out = tiny.run(ir.to_proto(model), feeds[0])[0]
    assert out.shape == (8, 10) and np.isfinite(out).all()


def _stream(tiny, tail, outputs=(("y", ["b", C, 4, 4]),), extra=None):
    """x → conv1 → relu → conv2 ; conv0 → relu ; add(conv2, relu0) → `tail` (nodes reading "s")."""
    rng = np.random.default_rng(0)
    init = {n: rng.standard_normal((C, C, 1, 1)).astype(np.float32) for n in ("w0", "w1", "w2")}
    init.update(extra or {})
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
        h.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        h.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        h.make_node("Add", ["c2", "r0"], ["s"], name="residual"),
        *tail,
    ]
    return ir.from_proto(tiny.make_model(nodes, [("x", ["b", C, 4, 4])], list(outputs), init, infer_shapes=True))


def test_a_stream_reaching_a_graph_output_a_norm_or_a_reshape_is_left_whole_with_the_reason(tiny):
    rng = np.random.default_rng(1)

    def reasons(model):
        return {g.name: g.reason for g in find_groups(model) if g.reason}

    out = reasons(_stream(tiny, [h.make_node("Relu", ["s"], ["y"], name="relu_out")]))
    assert out == {"conv0+conv2": "value 'y' is a graph output"}
    mlp = {
        "wu": rng.standard_normal((C, 2 * C)).astype(np.float32),
        "wd": rng.standard_normal((2 * C, C)).astype(np.float32),
    }
    rms = [  # a pre-norm transformer's MLP: x + down(relu(up(x))), then a decomposed RMSNorm
        h.make_node("MatMul", ["x", "wu"], ["u"], name="up"),
        h.make_node("Relu", ["u"], ["a"]),
        h.make_node("MatMul", ["a", "wd"], ["d"], name="down"),
        h.make_node("Add", ["x", "d"], ["s"], name="residual"),
        h.make_node("Mul", ["s", "s"], ["sq"]),
        h.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="rms"),
        h.make_node("Div", ["s", "ms"], ["y"]),
    ]
    proto = tiny.make_model(rms, [("x", ["b", 4, C])], [("y", ["b", 4, C])], {**mlp, "axes": np.array([-1])})
    out = reasons(ir.from_proto(onnx.shape_inference.infer_shapes(proto)))
    assert out == {
        "down": "ReduceMean rms normalizes over a residual stream's channels (it mixes them: "
        "a transformer's hidden size is left whole)"
    }
    ln = [h.make_node("Flatten", ["s"], ["f"], name="flat"), h.make_node("LayerNormalization", ["f", "g"], ["y"])]
    out = reasons(_stream(tiny, ln, [("y", ["b", C * 16])], {"g": np.ones(C * 16, np.float32)}))
    assert "LayerNormalization" in out["conv0+conv2"] and "hidden size is left whole" in out["conv0+conv2"]
    shape = {"shape": np.array([-1, 2, C // 2, 16], np.int64), "w": rng.standard_normal((C * 8, 3)).astype(np.float32)}
    split = [
        h.make_node("Reshape", ["s", "shape"], ["r"], name="heads"),
        h.make_node("Relu", ["r"], ["y"]),
    ]
    out = reasons(_stream(tiny, split, [("y", ["b", 2, C // 2, 16])], shape))
    assert out == {"conv0+conv2": f"Reshape heads to [-1, 2, {C // 2}, 16] is not a flatten"}


def _with_norms(rng, shape, axis, norms):
    """A random array whose slices along `axis` have the given L2 norms."""
    w = np.moveaxis(rng.standard_normal(shape), axis, 0)
    w *= (np.asarray(norms) / np.linalg.norm(w.reshape(len(norms), -1), axis=1))[
        (slice(None),) + (None,) * (w.ndim - 1)
    ]
    return np.moveaxis(w, 0, axis).astype(np.float32)


def test_a_stream_is_ranked_by_each_layers_standardized_scores_not_by_its_largest_layer(tiny):
    """conv2's filters (×100) would keep the highest-numbered channels; conv0, conv1's input rows
    and fc's rows the lowest. Summing each layer's standardized scores, three layers outvote one
    (the L2 norm over the whole group would follow conv2)."""
    rng = np.random.default_rng(3)
    up, down = 1.0 + np.arange(C), 1.0 + np.arange(C)[::-1]
    tail = [
        h.make_node("GlobalAveragePool", ["s"], ["p"], name="pool"),
        h.make_node("Flatten", ["p"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    model = _stream(tiny, tail, [("y", ["b", 3])], {"wf": _with_norms(rng, (3, C), 1, down)})
    arrays = {
        "w0": _with_norms(rng, (C, C, 1, 1), 0, down),
        "w1": _with_norms(rng, (C, C, 1, 1), 1, down),
        "w2": _with_norms(rng, (C, C, 1, 1), 0, 100 * up),
    }
    for name, array in arrays.items():
        model.graph.initializers[name].const_value = ir.tensor(array, name=name)
    (stream,) = [g for g in find_groups(model) if g.residual and not g.reason]
    assert {p.name for p in stream.producers} == {"conv0", "conv2"}
    step = PASSES["prune_structured"](
        Context(), sparsity=0.5, prune="channels", multiple=1, importance="magnitude", recovery="none"
    )
    step(model)
    kept = model.graph.initializers["w0"].const_value.numpy()  # its input (the graph's) is not cut
    n = kept.shape[0]
    assert 0 < n < C and np.allclose(kept, arrays["w0"][:n])  # the lowest-numbered channels kept
