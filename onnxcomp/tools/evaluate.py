"""Compare an original and a compressed model: metric, latency (same session settings), size."""

import os
from pathlib import Path

import onnx

from onnxcomp import models
from onnxcomp.calibration.readers import make_reader
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import input_specs
from onnxcomp.ir.modelio import load_proto
from onnxcomp.runtime import measure_latency, ort_session, output_deviation, runner, synthetic_feed


def file_bytes(path: str | os.PathLike) -> int:
    """Size of the model file plus any external-data files beside it that it references."""
    path = Path(path)
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for init in proto.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    return total + sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).exists())


def data_deviation(original_session, compressed_session, reader) -> dict:
    """Worst-case output deviation over every feed of `reader`."""
    worst = {"max_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0}
    samples = 0
    for feed in reader:
        dev = output_deviation(original_session.run(None, feed), compressed_session.run(None, feed))
        worst = {
            "max_abs": max(worst["max_abs"], dev["max_abs"]),
            "rel_l2": max(worst["rel_l2"], dev["rel_l2"]),
            "cosine": min(worst["cosine"], dev["cosine"]),
        }
        samples += 1
    return {**worst, "samples": samples}


def evaluate(
    original,
    compressed,
    model_kind: str | None = None,
    data=None,
    batch: int = 1,
    sequence: int = 128,
    runs: int = 50,
    threads: int = 2,
) -> dict:
    """Metric delta (zoo metric for `model_kind`, or output deviation on `data`), latency and size."""
    original_proto, compressed_proto = load_proto(original), load_proto(compressed)
    specs = input_specs(original_proto)
    if [s.name for s in specs] != [s.name for s in input_specs(compressed_proto)]:
        raise OnnxcompError(f"{compressed}: inputs differ from {original}'s; these are not the same model")
    if model_kind is not None:
        zoo = models.get(model_kind)
        wanted = sorted(getattr(zoo, "INPUTS", None) or (zoo.INPUT,))
        if sorted(s.name for s in specs) != wanted:
            raise OnnxcompError(
                f"{original}: --model-kind {model_kind} feeds inputs {wanted}, the model takes "
                f"{sorted(s.name for s in specs)}: not a {model_kind} model"
            )
    pair = {"original": original, "compressed": compressed}
    sessions = {name: ort_session(path, threads, spinning=False) for name, path in pair.items()}
    try:
        latency = measure_latency(sessions, synthetic_feed(specs, batch, sequence), runs=runs)
    except OnnxcompError:
        raise
    except Exception as exc:  # ONNX Runtime refusing the shape (a sequence past the model's positions, …)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxcompError(
            f"{original}: ONNX Runtime cannot run it at batch {batch}, sequence {sequence} ({message})"
        ) from None
    if not any(dim is None for spec in specs for dim in spec.shape[1:]):
        sequence = None  # no dynamic non-batch axis: the sequence length played no part
    result = {
        "original": str(original),
        "compressed": str(compressed),
        "bytes": {"original": file_bytes(original), "compressed": file_bytes(compressed)},
        "latency": {
            **latency,
            "batch": batch,
            "sequence": sequence,
            "threads": threads,
            "ratio": latency["compressed"]["median_ms"] / latency["original"]["median_ms"],
        },
    }
    result["bytes"]["ratio"] = result["bytes"]["compressed"] / result["bytes"]["original"]
    if model_kind is not None:
        result["metric"] = models.get(model_kind).compare(runner(sessions["original"]), runner(sessions["compressed"]))
        result["metric"]["model_kind"] = model_kind
    elif data is not None:
        result["metric"] = data_deviation(sessions["original"], sessions["compressed"], make_reader(data, specs))
    return result


def summary_rows(result: dict) -> list[tuple[str, str, str]]:
    """(quantity, original, compressed) rows for a before/after table."""
    b, lat = result["bytes"], result["latency"]
    rows = [
        ("file size", f"{b['original'] / 1e6:.2f} MB", f"{b['compressed'] / 1e6:.2f} MB ({b['ratio']:.2f}x)"),
        (
            f"latency batch {lat['batch']}" + (f" seq {lat['sequence']}" if lat["sequence"] else "") + " median",
            f"{lat['original']['median_ms']:.2f} ms",
            f"{lat['compressed']['median_ms']:.2f} ms ({lat['ratio']:.2f}x)",
        ),
        ("latency p90", f"{lat['original']['p90_ms']:.2f} ms", f"{lat['compressed']['p90_ms']:.2f} ms"),
    ]
    for key, value in result.get("metric", {}).items():
        if isinstance(value, float):
            rows.append((key, "", f"{value:.4f}"))
    return rows
