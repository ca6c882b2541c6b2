"""ONNX Runtime sessions and latency measurement (the emission target for CPU)."""

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcomp.cache import cache_dir
from onnxcomp.custom_ops import DOMAIN as CUSTOM_DOMAIN
from onnxcomp.custom_ops import BuildError, library_path
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import InputSpec
from onnxcomp.progress import progress

SPINNING = "session.intra_op.allow_spinning"


def session_options(
    threads: int | None = 2,
    *,
    calibration: bool = False,
    spinning: bool = True,
    optimized_path: str | None = None,
) -> ort.SessionOptions:
    """The settings every onnxcomp session uses.

    Inference and timing: `threads` intra-op threads, one inter-op thread. `calibration`: basic
    graph optimizations only and no memory arena (the exposed intermediate outputs vary per
    batch), ORT's default threads. `spinning=False` stops idle pools from busy-waiting during interleaved timing.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: onnxcomp reports ORT's errors itself, in one line
    if calibration:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.enable_cpu_mem_arena = False
    elif threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry(SPINNING, "0")
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return options


def ort_session(
    model,
    threads: int | None = 2,
    optimized_path: str | None = None,
    *,
    calibration: bool = False,
    spinning: bool = True,
) -> ort.InferenceSession:
    """The one ONNX Runtime CPU session factory; `model` is a path, bytes or a ModelProto."""
    options = session_options(threads, calibration=calibration, spinning=spinning, optimized_path=optimized_path)
    if uses_custom_ops(model):
        register_custom_ops(options)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = str(model)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).splitlines()[0]
        if calibration:
            raise OnnxcompError(f"calibration: ONNX Runtime cannot load the model: {first}") from None
        raise OnnxcompError(
            f"{model if isinstance(model, str) else 'model'}: ONNX Runtime cannot load it: {first}"
        ) from None


def ir_session(
    model: ir.Model,
    *,
    outputs: list[str] = (),
    overridable: list[str] = (),
    threads: int | None = 2,
    calibration: bool = False,
    spinning: bool = True,
) -> ort.InferenceSession:
    """A session on an IR model that ONNX Runtime reads from files, never from one serialized copy:
    the model is saved with external data into a temporary folder (tensors streamed from where they
    are), with the values named in `outputs` as extra graph outputs and the initializers named in
    `overridable` declared as graph inputs (a run may feed them); then the model is restored and
    the folder removed. ONNX Runtime then holds one copy of the weights, not the 2-3 that loading
    from bytes costs (a SmolLM2 session: 0.56 GiB instead of 1.45 GiB), and models past protobuf's
    2 GB limit load at all."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    count_out, count_in = len(model.graph.outputs), len(model.graph.inputs)
    existing_out, existing_in = {v.name for v in model.graph.outputs}, {v.name for v in model.graph.inputs}
    untyped = []
    folder = tempfile.mkdtemp(dir=cache_dir("sessions"), prefix="model-")
    try:
        for name in outputs:
            value = values[name]
            if name not in existing_out:
                model.graph.outputs.append(value)
            if value.type is None:
                untyped.append(value)
                value.type = ir.TensorType(ir.DataType.FLOAT)
        for name in overridable:
            if name not in existing_in:
                model.graph.inputs.append(model.graph.initializers[name])
        path = Path(folder) / "model.onnx"
        ir.save(model, path, external_data="model.onnx.data")
        return ort_session(str(path), threads, calibration=calibration, spinning=spinning)
    finally:
        while len(model.graph.outputs) > count_out:
            model.graph.outputs.pop()
        while len(model.graph.inputs) > count_in:
            model.graph.inputs.pop()
        for value in untyped:
            value.type = None
        shutil.rmtree(folder, ignore_errors=True)


def uses_custom_ops(model) -> bool:
    """The model (a path, bytes or a ModelProto) imports the project's operator domain (MatMulInt4,
    written by `format = "custom"`)."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes) and CUSTOM_DOMAIN.encode() not in model:
        return False  # the domain's name is not even in the bytes: no need to parse a copy
    else:
        try:
            proto = (
                onnx.load_model_from_string(model)
                if isinstance(model, bytes)
                else onnx.load(str(model), load_external_data=False)
            )
        except Exception:  # not readable here: ONNX Runtime will say what is wrong
            return False
    return any(entry.domain == CUSTOM_DOMAIN for entry in proto.opset_import)


def register_custom_ops(options: ort.SessionOptions) -> None:
    """Register the MatMulInt4 library (built once into the cache); one line when it cannot be."""
    try:
        options.register_custom_ops_library(library_path(cuda=False))
    except BuildError as exc:
        first = str(exc).strip().splitlines()[0]
        raise OnnxcompError(
            f"the model uses {CUSTOM_DOMAIN} operators (format 'custom'), but their library cannot be built: "
            f"{first} (see `onnxcomp build-ops`)"
        ) from None
    except Exception as exc:  # ONNX Runtime refusing the library file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxcompError(f"ONNX Runtime cannot load the {CUSTOM_DOMAIN} operator library: {first}") from None


def calibration_session(model_bytes: bytes) -> ort.InferenceSession:
    """A session for streaming calibration data (see `session_options`)."""
    return ort_session(model_bytes, None, calibration=True)


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


def spins(session: ort.InferenceSession) -> bool:
    """Whether the session's idle intra-op threads busy-wait (ONNX Runtime's default)."""
    try:
        return session.get_session_options().get_session_config_entry(SPINNING) != "0"
    except RuntimeError:  # the entry was never set: ORT's default, spinning
        return True


def measure_latency(sessions: dict[str, ort.InferenceSession], feed: dict, runs: int = 50, warmup: int = 5) -> dict:
    """Median and p90 milliseconds per session; runs interleave so noise hits all alike.

    Requires sessions made with `spinning=False` when more than one is timed: a spinning pool keeps
    the cores busy after its run and slows the next session's (MiniLM b1 s128 fp32: 50 ms per run
    interleaved with one other spinning session, 18 ms with neither spinning, 21 ms alone).
    """
    spinning = [name for name, session in sessions.items() if spins(session)]
    if len(sessions) > 1 and spinning:
        raise ValueError(f"measure_latency: sessions {spinning} spin; open them with ort_session(..., spinning=False)")
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


def output_deviation(reference: list[np.ndarray], actual: list[np.ndarray]) -> dict:
    """Worst max-abs error, relative L2 error and cosine over all outputs."""
    worst = {"max_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0}
    for ref, act in zip(reference, actual):
        ref = np.asarray(ref, dtype=np.float64).ravel()
        act = np.asarray(act, dtype=np.float64).ravel()
        if ref.size == 0:
            continue
        diff = act - ref
        worst["max_abs"] = max(worst["max_abs"], float(np.abs(diff).max()))
        worst["rel_l2"] = max(worst["rel_l2"], float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30)))
        denom = np.linalg.norm(ref) * np.linalg.norm(act)
        cosine = float(ref @ act / denom) if denom > 0 else 1.0
        worst["cosine"] = min(worst["cosine"], cosine)
    return worst
