"""ONNX Runtime sessions built from an IR model through files (`onnxcomp.runtime.ir_session`)."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

from onnxcomp.cache import cache_dir
from onnxcomp.runtime import ir_session, measure_latency, ort_session


def _model(tiny):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])]
    return ir.serde.deserialize_model(tiny.make_model(nodes, [("x", [2, 3])], [("y", [2, 4])], {"w": w})), w


def test_outputs_and_overridable_initializers_then_the_model_is_restored(tiny):
    model, w = _model(tiny)
    before = ir.to_proto(model).SerializeToString(deterministic=True)
    folders = set(cache_dir("sessions").iterdir())
    session = ir_session(model, outputs=["m"], overridable=["w"])
    x = np.array([[1, -2, 3], [0, 1, -1]], np.float32)
    y, m = session.run(["y", "m"], {"x": x})
    np.testing.assert_allclose(m, x @ w, rtol=1e-6)
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-6)
    (fed,) = session.run(["m"], {"x": x, "w": -w})  # the initializer is a default a run may replace
    np.testing.assert_allclose(fed, -(x @ w), rtol=1e-6)
    assert ir.to_proto(model).SerializeToString(deterministic=True) == before
    assert set(cache_dir("sessions").iterdir()) == folders  # the files ORT read from are gone


def test_interleaved_timing_refuses_spinning_sessions(tiny):
    """Spinning pools slow each other's runs when interleaved (MiniLM: 50 ms instead of 18 ms)."""
    proto = ir.to_proto(_model(tiny)[0])
    feed = {"x": np.ones((2, 3), np.float32)}
    quiet = {name: ort_session(proto, spinning=False) for name in ("a", "b")}
    times = measure_latency(quiet, feed, runs=3, warmup=1)
    assert set(times) == {"a", "b"} and all(t["median_ms"] > 0 for t in times.values())
    with pytest.raises(ValueError, match=r"\['b'\] spin"):
        measure_latency({"a": quiet["a"], "b": ort_session(proto)}, feed, runs=3)
    assert measure_latency({"alone": ort_session(proto)}, feed, runs=3, warmup=1)["alone"]["runs"] == 3
