"""Conv consumers refit on their input's im2col patches (`conv_refit`).

A Conv is a linear layer on patches: the patches times the flattened weight equal ONNX Runtime's
Conv output (strides, pads and dilations included), and refitting a Conv consumer lowers the
pruned model's output error against the unpruned one.
"""

import numpy as np
import onnx_ir as ir
from onnx import helper as h

from onnxcomp.ir.modelio import check_model
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.pruning.patches import conv_geometry


def test_patches_times_the_flattened_weight_equal_the_conv(tiny):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    node = h.make_node("Conv", ["x", "w"], ["y"], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])
    proto = tiny.make_model([node], [("x", [2, 3, 7, 6])], [("y", [2, 4, 4, 5])], {"w": w})
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    geometry = conv_geometry(ir.from_proto(proto).graph.node(0), w)
    assert geometry.size == 6
    y = tiny.run(proto, {"x": x})[0]
    patches = geometry.rows(x)
    assert patches.shape == (2 * 4 * 5, 3 * 6)
    assert np.allclose(patches @ w.reshape(4, -1).T, y.transpose(0, 2, 3, 1).reshape(-1, 4), atol=1e-5)


def _cnn(tiny):
    """conv1 (8) → Relu → conv2 (3×3) → Relu → conv3 (1×1): conv1's and conv2's groups have Conv consumers."""
    rng = np.random.default_rng(1)
    init = {
        "w1": rng.standard_normal((8, 2, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3,
        "w3": rng.standard_normal((3, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    return tiny.make_model(nodes, [("x", ["n", 2, 8, 8])], [("y", ["n", 3, 4, 4])], init, infer_shapes=True)


def test_refitting_conv_consumers_lowers_the_output_error(tiny):
    proto = _cnn(tiny)
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((16, 2, 8, 8)).astype(np.float32)} for _ in range(4)]
    test = {"x": rng.standard_normal((16, 2, 8, 8)).astype(np.float32)}
    reference = tiny.run(proto, test)[0]
    errors, details = {}, {}
    for conv_refit in (False, True):
        model = ir.from_proto(proto)
        context = Context(calibration=feeds)
        step = PASSES["prune_structured"](
            context, sparsity=0.5, prune="channels", multiple=1, importance="magnitude", conv_refit=conv_refit
        )
        step(model)
        check_model(model, "pruned cnn")
        out = tiny.run(ir.to_proto(model), test)[0]
        errors[conv_refit] = float(np.sum((out - reference) ** 2) / np.sum(reference**2))
        details[conv_refit] = step.details["groups"]
    assert all("error_after" not in g for g in details[False])  # Conv consumers were only sliced
    assert all(g["error_after"] < g["error_before"] for g in details[True])
    assert errors[True] < 0.5 * errors[False]
