"""Stream calibration batches through ONNX Runtime once and answer a step's statistic requests.

The requested intermediate tensors are exposed as extra graph outputs of a copy of the model;
each batch's values update bounded collectors (`TensorStats`, row samples at a fixed stride,
Gram accumulators) and are then dropped. Range statistics are cached on disk keyed by a hash of
the model bytes, the data and the settings, so a rerun skips the work.
"""

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.cache import cache_dir, digest, read_cached, write_atomic
from onnxcomp.calibration.collectors import NUM_BINS, GramAccumulator, TensorStats
from onnxcomp.calibration.requests import GramRequest, RangeRequest, Request, RowsRequest, Statistics
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import initializer_bytes
from onnxcomp.ir.modelio import is_large, release_external_data
from onnxcomp.progress import progress
from onnxcomp.runtime import calibration_session, ir_session

CACHE_VERSION = "1"


def bytes_with_outputs(proto: onnx.ModelProto, names: list[str]) -> bytes:
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


def collect(
    model: onnx.ModelProto | ir.Model, requests: list[Request], reader, use_cache: bool = True, num_bins: int = NUM_BINS
) -> Statistics:
    """Answer every request in one pass of `reader` through the model in ONNX Runtime.

    The requested tensors become extra outputs of a copy of the model. Range statistics are
    cached on disk (key: the model with those outputs, the data, the bins) and served from there
    when nothing else is requested; row samples and Grams are recomputed (they are large).
    """
    requests = sorted(set(requests), key=lambda r: (type(r).__name__, r))
    if not requests:
        return Statistics()
    range_names = sorted({r.tensor for r in requests if isinstance(r, RangeRequest)})
    row_requests = [r for r in requests if isinstance(r, RowsRequest)]
    gram_names = sorted({r.tensor for r in requests if isinstance(r, GramRequest)})
    names = sorted({r.tensor for r in requests})
    cache_file = None
    if isinstance(model, ir.Model) and (is_large(initializer_bytes(model)) or gram_names or row_requests):
        # ORT reads the model from files: past protobuf's limit it must, and when Grams or rows are
        # asked for (never served from the cache) it spares the serialized copies of the weights
        session = ir_session(model, outputs=names, threads=None, calibration=True)
        release_external_data(model)  # a model over 2 GiB: the session holds its own weights
    else:
        proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
        model_bytes = bytes_with_outputs(proto, names)
        del proto  # a temporary copy when `model` is IR: free it before ONNX Runtime makes its own
        if use_cache and range_names:
            key = digest(CACHE_VERSION, model_bytes, data_fingerprint(reader), str(num_bins))
            cache_file = cache_dir("calibration") / f"{key}.npz"
            if cache_file.exists() and not row_requests and not gram_names:
                return Statistics(ranges=_load(cache_file, range_names))
        session = calibration_session(model_bytes)
        del model_bytes
    feeds = list(reader) if row_requests else reader  # the row stride needs the number of batches
    stats = {name: TensorStats(num_bins) for name in range_names}
    kept: dict[RowsRequest, list[np.ndarray]] = {r: [] for r in row_requests}
    grams: dict[str, GramAccumulator] = {}
    batches = 0
    for feed in progress(feeds, desc="calibrating", unit="batch"):
        try:
            values = dict(zip(names, session.run(names, feed)))
        except Exception as exc:  # e.g. a token id past the vocabulary: ORT's error, one line
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxcompError(
                f"calibration batch {batches}: ONNX Runtime cannot run the model on it ({message})"
            ) from None
        for name in names:
            value = values.pop(name)  # drop each output once counted
            if name in stats:
                try:
                    stats[name].update(value)
                except ValueError as exc:
                    raise OnnxcompError(f"calibration: tensor {name!r} has {exc} on batch {batches}") from None
            for request in (r for r in row_requests if r.tensor == name):
                flat = np.asarray(value, dtype=np.float32)
                flat = flat.reshape(-1, flat.shape[-1])
                step = max(1, -(-len(flat) * len(feeds) // request.rows))
                kept[request].append(flat[::step].copy())
            if name in gram_names:
                if name not in grams:
                    grams[name] = GramAccumulator(np.shape(value)[-1])
                grams[name].add(value)
        batches += 1
    if batches == 0:
        raise OnnxcompError("calibration data produced no samples")
    empty = [n for n, s in stats.items() if s.count == 0]
    if empty:
        raise OnnxcompError(f"calibration collected no values for tensor {empty[0]!r} (it is empty on every sample)")
    if cache_file is not None:
        _save(cache_file, stats)
    return Statistics(
        ranges=stats,
        rows={(r.tensor, r.rows): np.concatenate(parts)[: r.rows] for r, parts in kept.items()},
        grams={name: acc.hessian for name, acc in grams.items()},
    )


def _save(path, stats: dict[str, TensorStats]) -> None:
    arrays = {}
    for i, (name, st) in enumerate(sorted(stats.items())):
        for field, value in st.to_arrays().items():
            arrays[f"{i}/{field}"] = value
    arrays["names"] = np.array(sorted(stats))
    write_atomic(path, lambda fh: np.savez(fh, **arrays))


def _load(path, names: list[str]) -> dict[str, TensorStats]:
    return read_cached(path, lambda p: _read(p, names))


def _read(path, names: list[str]) -> dict[str, TensorStats]:
    with np.load(path, allow_pickle=False) as data:
        stored = list(data["names"])
        out = {}
        for i, name in enumerate(stored):
            prefix = f"{i}/"
            fields = {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}
            out[str(name)] = TensorStats.from_arrays(fields)
    return {n: out[n] for n in names}
