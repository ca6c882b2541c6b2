"""onnxcomp.passes.manager: statistics collected once per step; requirements in requires()."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

import onnxcomp
import onnxcomp.passes.manager as manager
from onnxcomp.calibration.requests import RangeRequest, RowsRequest
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.passes.manager import Pipeline


@pytest.fixture
def two_linears(tiny):
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["a"], name="first"),
        h.make_node("Relu", ["a"], ["r"], name="relu"),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
    ]
    inits = {
        "w1": rng.standard_normal((8, 16)).astype(np.float32),
        "w2": rng.standard_normal((16, 4)).astype(np.float32),
    }
    model = tiny.make_model(nodes, [("x", ["batch", 8])], [("y", ["batch", 4])], inits, infer_shapes=True)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(3)]
    return model, feeds


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    real = manager.collect

    def record(model, requests, reader, **kwargs):
        calls.append(sorted(requests, key=repr))
        return real(model, requests, reader, **kwargs)

    monkeypatch.setattr(manager, "collect", record)
    monkeypatch.setattr("onnxcomp.passes.calibrate.collect", record)
    return calls


def test_one_collection_per_calibrate_step(two_linears, recorded):
    """w8a8-smoothquant's shape: each calibrate collects what the passes of its step ask for, once."""
    model, feeds = two_linears
    steps = [
        ("calibrate", {}),
        ("smoothquant", {"alpha": "auto", "fallback": "mul"}),
        ("calibrate", {}),
        ("quantize_qdq", {}),
    ]
    onnxcomp.compress(model, steps, feeds, use_cache=False)
    assert len(recorded) == 2
    first, second = recorded
    assert {type(r) for r in first} == {RangeRequest, RowsRequest}  # smoothquant: maxima and α-search rows together
    assert {type(r) for r in second} == {RangeRequest}  # quantize_qdq, on the smoothed model
    assert {r.tensor for r in second} == {"x_scaled", "r_scaled"}  # the inputs the inserted Muls scale


def test_a_pass_with_rows_and_no_calibrate_step_is_collected_before_it_runs(two_linears, recorded):
    model, feeds = two_linears
    onnxcomp.compress(model, [("quantize_weight_only_awq", {"samples": 16})], feeds, use_cache=False)
    assert recorded == [[RowsRequest("r", 16), RowsRequest("x", 16)]]


def test_passes_without_requests_collect_nothing(two_linears, recorded):
    model, feeds = two_linears
    onnxcomp.compress(model, "w4a16-rtn", feeds, use_cache=False)
    assert recorded == []


def test_requirements_are_one_line_errors_from_requires(two_linears):
    model, _ = two_linears
    awq = PASSES["quantize_weight_only_awq"](Context())
    with pytest.raises(OnnxcompError, match=r"^pass 'quantize_weight_only_awq' needs calibration data: pass --calib"):
        awq(ir.from_proto(model))  # run directly: onnx-ir calls requires(); our error is not wrapped
    with pytest.raises(OnnxcompError, match=r"pass 'quantize_weight_only_gptq' needs calibration data"):
        Pipeline([PASSES["quantize_weight_only_gptq"](Context())], Context()).run(ir.from_proto(model))


def test_a_rewrite_inside_a_step_makes_later_passes_collect_again(two_linears, recorded):
    """calibrate → smoothquant (rewrites) → AWQ: AWQ's rows are sampled from the smoothed model, not
    taken from the step's collection on the model before smoothing."""
    model, feeds = two_linears
    steps = [
        ("calibrate", {}),
        ("smoothquant", {"alpha": 0.9, "fallback": "mul"}),
        ("quantize_weight_only_awq", {"samples": 16}),
    ]
    onnxcomp.compress(model, steps, feeds, use_cache=False)
    assert len(recorded) == 2
    assert {r.tensor for r in recorded[0] if isinstance(r, RowsRequest)} == {"x", "r"}  # at calibrate
    assert {r.tensor for r in recorded[1]} == {"x_scaled", "r_scaled"}  # again, after the inserted Muls
