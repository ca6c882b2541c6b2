"""onnxcomp.calibration.runner.collect_statistics: ORT streaming, exact statistics, on-disk cache."""

import numpy as np
import onnxruntime
import pytest

from onnxcomp.calibration.readers import make_reader
from onnxcomp.calibration.runner import collect_statistics
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import InputSpec


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
    stats = collect_statistics(model, ["y", "mm", "x", "mm"], reader)
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
    first = collect_statistics(model, ["mm", "y"], reader)
    assert len(list((tmp_cache / "calibration").glob("*.npz"))) == 1

    def no_ort(*args, **kwargs):
        raise AssertionError("onnxruntime.InferenceSession called although the statistics are cached")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_ort)
    second = collect_statistics(model, ["y", "mm"], reader)
    for name in ("mm", "y"):
        a, b = first[name], second[name]
        assert (a.min, a.max, a.width, a.count) == (b.min, b.max, b.width, b.count)
        np.testing.assert_array_equal(a.hist, b.hist)
        np.testing.assert_array_equal(a.channel_absmax, b.channel_absmax)
    # proof that the patch is effective: bypassing the cache reaches ORT
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_statistics(model, ["mm", "y"], reader, use_cache=False)
    # another model → another cache key → ORT again
    changed = type(model)()
    changed.CopyFrom(model)
    changed.graph.initializer[0].raw_data = np.full((6, 4), 0.5, np.float32).tobytes()
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_statistics(changed, ["mm", "y"], reader)
    # other data → another cache key → ORT again
    other = make_reader([{"x": np.ones((2, 6), np.float32)}], [InputSpec("x", np.float32, (None, 6))])
    with pytest.raises(OnnxcompError, match="InferenceSession called"):
        collect_statistics(model, ["mm", "y"], other)


def test_use_cache_false_writes_nothing(tmp_cache, matmul_relu):
    model, _, _, reader = matmul_relu
    collect_statistics(model, ["mm"], reader, use_cache=False)
    assert not list((tmp_cache / "calibration").glob("*"))


def test_no_tensors_and_no_samples(tmp_cache, matmul_relu):
    model, _, _, reader = matmul_relu
    assert collect_statistics(model, [], reader) == {}
    empty = make_reader([], [InputSpec("x", np.float32, (None, 6))])
    with pytest.raises(OnnxcompError, match="calibration data produced no samples"):
        collect_statistics(model, ["mm"], empty)
