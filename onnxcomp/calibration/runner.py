"""Stream calibration batches through ONNX Runtime and collect statistics of chosen tensors.

The chosen intermediate tensors are exposed as extra graph outputs of a copy of the model;
each batch's values update bounded `TensorStats` and are then dropped. Results are cached on
disk keyed by a hash of the model bytes, the data and the settings, so a rerun skips the work.
"""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from ..cache import cache_dir, digest
from ..errors import OnnxcompError
from ..progress import progress
from .collectors import NUM_BINS, TensorStats

CACHE_VERSION = "1"


def _bytes_with_outputs(proto: onnx.ModelProto, names: list[str]) -> bytes:
    """The model serialized with `names` as extra graph outputs (`proto` is left as it was)."""
    count = len(proto.graph.output)
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    try:
        return proto.SerializeToString(deterministic=True)
    finally:
        del proto.graph.output[count:]


def data_fingerprint(reader) -> str:
    """Hash of every calibration feed (names, dtypes, shapes, bytes)."""
    parts = []
    for feed in reader:
        for name in sorted(feed):
            arr = np.ascontiguousarray(feed[name])
            parts.append(f"{name}|{arr.dtype}|{arr.shape}")
            parts.append(digest(arr.tobytes()))
    if not parts:
        raise OnnxcompError("calibration data produced no samples")
    return digest(*parts)


def collect_statistics(
    model: onnx.ModelProto | ir.Model,
    tensor_names: list[str],
    reader,
    use_cache: bool = True,
    num_bins: int = NUM_BINS,
) -> dict[str, TensorStats]:
    """Run every feed of `reader` through the model and return stats for `tensor_names`."""
    names = sorted(set(tensor_names))
    if not names:
        return {}
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    model_bytes = _bytes_with_outputs(proto, names)
    del proto  # a temporary copy when `model` is IR: free it before ONNX Runtime makes its own
    key = digest(CACHE_VERSION, model_bytes, data_fingerprint(reader), str(num_bins))
    cache_file = cache_dir("calibration") / f"{key}.npz"
    if use_cache and cache_file.exists():
        return _load(cache_file, names)

    session = _session(model_bytes)
    del model_bytes
    stats = {name: TensorStats(num_bins) for name in names}
    batches = 0
    for feed in progress(reader, desc="calibrating", unit="batch"):
        values = session.run(names, feed)
        for name in names:
            try:
                stats[name].update(values.pop(0))  # drop each output once counted
            except ValueError as exc:
                raise OnnxcompError(f"calibration: tensor {name!r} has {exc} on batch {batches}") from None
        batches += 1
    if batches == 0:
        raise OnnxcompError("calibration data produced no samples")
    empty = [n for n, s in stats.items() if s.count == 0]
    if empty:
        raise OnnxcompError(f"calibration collected no values for tensor {empty[0]!r} (it is empty on every sample)")
    if use_cache:
        _save(cache_file, stats)
    return stats


def _session(model_bytes: bytes) -> ort.InferenceSession:
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session_options.log_severity_level = 3
    session_options.enable_cpu_mem_arena = False  # exposed outputs vary per batch: do not hoard
    try:
        return ort.InferenceSession(model_bytes, session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxcompError(f"calibration: ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


def collect_row_samples(model: ir.Model, tensor_names: list[str], reader, rows: int = 256) -> dict[str, np.ndarray]:
    """Up to `rows` vectors (last axis) of each named tensor, spread evenly over all batches.

    Every batch contributes its rows at a fixed stride; the result is deterministic for the same
    data. Memory stays bounded: each batch is thinned before the next one runs.
    """
    names = sorted(set(tensor_names))
    if not names:
        return {}
    proto = ir.to_proto(model)
    session = _session(_bytes_with_outputs(proto, names))
    del proto
    kept: dict[str, list[np.ndarray]] = {name: [] for name in names}
    feeds = list(reader)
    if not feeds:
        raise OnnxcompError("calibration data produced no samples")
    for feed in progress(feeds, desc="sampling activations", unit="batch"):
        values = session.run(names, feed)
        for name in names:
            flat = np.asarray(values.pop(0), dtype=np.float32)
            flat = flat.reshape(-1, flat.shape[-1])
            step = max(1, -(-len(flat) * len(feeds) // rows))
            kept[name].append(flat[::step].copy())
    return {name: np.concatenate(parts)[:rows] for name, parts in kept.items()}


def _save(path, stats: dict[str, TensorStats]) -> None:
    arrays = {}
    for i, (name, st) in enumerate(sorted(stats.items())):
        for field, value in st.to_arrays().items():
            arrays[f"{i}/{field}"] = value
    arrays["names"] = np.array(sorted(stats))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load(path, names: list[str]) -> dict[str, TensorStats]:
    with np.load(path, allow_pickle=False) as data:
        stored = list(data["names"])
        out = {}
        for i, name in enumerate(stored):
            prefix = f"{i}/"
            fields = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
            out[str(name)] = TensorStats.from_arrays(fields)
    return {n: out[n] for n in names}
