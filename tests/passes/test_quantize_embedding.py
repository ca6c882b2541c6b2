"""quantize_embedding on tiny graphs: error bound, tied tables left alone, options."""

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as h

import onnxcomp
from onnxcomp.errors import OnnxcompError

RECIPE = [("quantize_embedding", {"min_elements": 1000}), ("remove_unused", {})]


def embedding_model(tiny, table, extra_nodes=(), outputs=(("y", ["n", "s", 32]),)):
    nodes = [h.make_node("Gather", ["table", "ids"], ["y"], axis=0, name="embed"), *extra_nodes]
    ids = h.make_tensor_value_info("ids", TensorProto.INT64, ["n", "s"])
    x = [ids] + ([("x", ["n", 64])] if extra_nodes else [])
    return tiny.make_model(nodes, x, list(outputs), {"table": table})


def test_rows_within_half_a_step_and_int8_storage(tiny):
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((100, 32)) * rng.uniform(0.01, 3, (100, 1))).astype(np.float32)
    model = embedding_model(tiny, table)
    result = onnxcomp.compress(model, RECIPE)
    ids = rng.integers(0, 100, (3, 7)).astype(np.int64)
    got = tiny.run(result.model, {"ids": ids})[0]
    step = np.abs(table).max(axis=1) / 127.0
    assert np.all(np.abs(got - table[ids]) <= step[ids][..., None] / 2 + 1e-7)
    assert not np.array_equal(got, table[ids]), "values must actually be quantized"
    stored = {i.name: i.data_type for i in result.model.graph.initializer}
    assert TensorProto.INT8 in stored.values() and "table" not in stored
    details = result.report["passes"][0]["details"]
    assert details["tables"][0]["bytes_after"] < 0.3 * details["tables"][0]["bytes_before"]


def test_table_shared_with_a_matmul_is_left_alone(tiny):
    """A tied LM head reads the same table: quantizing only the Gather side would store it twice."""
    table = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    head = h.make_node("MatMul", ["x", "table"], ["logits"], name="head")
    model = embedding_model(tiny, table, [head], outputs=(("y", ["n", "s", 32]), ("logits", ["n", 32])))
    result = onnxcomp.compress(model, RECIPE)
    assert tiny.op_types(result.model).count("Gather") == 1
    assert result.report["passes"][0]["details"]["skipped"][0]["table"] == "table"


def test_small_tables_and_excluded_gathers_stay_float(tiny):
    table = np.ones((10, 32), np.float32)
    assert tiny.op_types(onnxcomp.compress(embedding_model(tiny, table), RECIPE).model) == ["Gather"]
    big = np.ones((100, 32), np.float32)
    recipe = [("quantize_embedding", {"min_elements": 1000, "exclude": ["embed"]})]
    assert tiny.op_types(onnxcomp.compress(embedding_model(tiny, big), recipe).model) == ["Gather"]
    with pytest.raises(OnnxcompError, match="no_such"):
        onnxcomp.compress(embedding_model(tiny, big), [("quantize_embedding", {"exclude": ["no_such"]})])
