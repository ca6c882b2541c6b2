"""ONNX Runtime sessions and latency measurement (the emission target for CPU)."""

import time

import numpy as np
import onnx
import onnxruntime as ort

from .calibration.readers import InputSpec
from .errors import OnnxcompError
from .progress import progress


def ort_session(model, threads: int = 2, optimized_path: str | None = None) -> ort.InferenceSession:
    """A CPU session with fixed thread counts; `model` is a path, bytes or a ModelProto."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = str(model)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        what = model if isinstance(model, str) else "model"
        raise OnnxcompError(f"{what}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None


def runner(session: ort.InferenceSession):
    """feed → first output, the form the model zoo's metrics take."""
    return lambda feed: session.run(None, feed)[0]


def synthetic_feed(specs: list[InputSpec], batch: int = 1, sequence: int = 128, seed: int = 0) -> dict:
    """A feed for timing: dynamic axis 0 = batch, other dynamic axes = sequence.

    Integer inputs get ones (valid token ids and masks); float inputs standard normal.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = [(batch if i == 0 else sequence) if d is None else d for i, d in enumerate(spec.shape)]
        if spec.dtype.kind in "iu":
            feed[spec.name] = np.ones(shape, dtype=spec.dtype)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feed


def measure_latency(sessions: dict[str, ort.InferenceSession], feed: dict, runs: int = 50, warmup: int = 5) -> dict:
    """Median and p90 milliseconds per session; runs interleave so noise hits all alike."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in progress(range(runs), desc="timing", unit="round"):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": runs}
        for name, t in times.items()
    }
