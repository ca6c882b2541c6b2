"""onnxcomp.calibration.runner.collect: one ORT pass per step, exact statistics, on-disk cache of ranges."""

import numpy as np
import onnxruntime
import pytest

from onnxcomp.calibration.readers import make_reader
from onnxcomp.calibration.requests import GramRequest, RangeRequest, RowsRequest
from onnxcomp.calibration.runner import collect
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import InputSpec


def collect_ranges(model, names, reader, use_cache=True):
    return collect(model, [RangeRequest(n) for n in names], reader, use_cache).ranges


@pytest.fixture
def matmul_relu(tiny):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    h = tiny.helper
    model = tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), h.make_node("Relu", ["mm"], ["y"], name="relu")],
        [("x", ["batch", 6])],
        [("y", ["batch", 4])],
        {"w": w},
    )
    feeds = [{"x": rng.standard_normal((n, 6)).astype(np.float32) * (i + 1)} for i, n in enumerate((3, 5, 2, 7))]
    reader = make_reader(feeds, [InputSpec("x", np.float32, (None, 6))])
    return model, w, feeds, reader


def test_statistics_match_numpy(tmp_cache, matmul_relu):
    model, w, feeds, reader = matmul_relu
    stats = collect_ranges(model, ["y", "mm", "x", "mm"], reader)
    assert sorted(stats) == ["mm", "x", "y"]
    x = np.concatenate([f["x"] for f in feeds])
    expected = {"x": x, "mm": x @ w, "y": np.maximum(x @ w, 0)}
    for name, values in expected.items():
        st = stats[name]
        assert st.count == values.size and st.hist.sum() == values.size
        np.testing.assert_allclose([st.min, st.max], [values.min(), values.max()], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.channel_absmax, np.abs(values).max(axis=0), rtol=1e-5, atol=1e-6)
    assert stats["y"].min == 0.0
    # the model itself is not modified (the extra outputs live on a copy)
    assert [o.name for o in model.graph.output] == ["y"]


def test_second_call_hits_the_cache(tmp_cache, matmul_relu, monkeypatch):
    model, _, _, reader = matmul_relu
    first = collect_ranges(model, ["mm", "y"], reader)
    assert len(list((tmp_cache / "calibration").glob("*.npz"))) == 1

    def no_ort(*args, **kwargs):
        raise AssertionError("onnxruntime.InferenceSession called although the statistics are cached")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_ort)
    second = collect_ranges(model, ["y", "mm"], reader)
    for name in ("mm", "y"):
        a, b = first[name], second[name]
        assert (a.min, a.max, a.width, a.count) == (b.min, b.max, b.width, b.count)
        np.testing.assert_array_equal(a.hist, b.hist)
        np.testing.assert_array_equal(a.channel_absmax, b.channel_absmax)
    # proof that the patch is effective: bypassing the cache reaches ORT
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_ranges(model, ["mm", "y"], reader, use_cache=False)
    # another model → another cache key → ORT again
    changed = type(model)()
    changed.CopyFrom(model)
    changed.graph.initializer[0].raw_data = np.full((6, 4), 0.5, np.float32).tobytes()
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_ranges(changed, ["mm", "y"], reader)
    # other data → another cache key → ORT again
    other = make_reader([{"x": np.ones((2, 6), np.float32)}], [InputSpec("x", np.float32, (None, 6))])
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_ranges(model, ["mm", "y"], other)


def test_use_cache_false_writes_nothing(tmp_cache, matmul_relu):
    model, _, _, reader = matmul_relu
    collect_ranges(model, ["mm"], reader, use_cache=False)
    assert not list((tmp_cache / "calibration").glob("*"))


def test_no_tensors_and_no_samples(tmp_cache, matmul_relu):
    model, _, _, reader = matmul_relu
    assert collect_ranges(model, [], reader) == {}
    empty = make_reader([], [InputSpec("x", np.float32, (None, 6))])
    with pytest.raises(OnnxcompError, match="calibration data produced no samples"):
        collect_ranges(model, ["mm"], empty)


def test_ranges_rows_and_grams_in_one_session(tmp_cache, matmul_relu, monkeypatch):
    """Every kind of request of a step is answered from one ONNX Runtime session, one pass over the data."""
    model, w, feeds, reader = matmul_relu
    sessions = []
    real = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(1) or real(*a, **k))
    stats = collect(model, [RangeRequest("mm"), RowsRequest("x", 8), GramRequest("x"), RowsRequest("y", 100)], reader)
    assert len(sessions) == 1
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(stats.grams["x"], 2 * x.T @ x / len(x), rtol=1e-10)
    assert stats.rows[("x", 8)].shape == (8, 6) and stats.rows[("y", 100)].shape == (17, 4)  # all 17 rows when fewer
    assert stats.ranges["mm"].count == 17 * 4
    # rows are not cached: asking again with rows runs ONNX Runtime again, ranges alone come from the cache
    collect(model, [RangeRequest("mm"), RowsRequest("x", 8)], reader)
    collect(model, [RangeRequest("mm"), RowsRequest("x", 8), GramRequest("x"), RowsRequest("y", 100)], reader)
    assert len(sessions) == 3
