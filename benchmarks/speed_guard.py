"""The speed guard on every preset: is any emitted model slower than its fp32 input at batch 1?

    .venv/bin/python benchmarks/speed_guard.py --out /tmp/speed_guard.md          # digits + MiniLM, every preset
    .venv/bin/python benchmarks/speed_guard.py --models digits --presets int8 --runs 200

For each model and preset, the cached fp32 export (`onnxcomp.models.onnx_path`) is compressed twice
with the model's built-in calibration data: with the speed guard (the default; its decision measured
afresh, `use_cache=False`) and without (`speed_guard=False`). The three models (fp32, unguarded,
guarded) are then timed in one interleaved `onnxcomp.runtime.measure_latency` call at batch 1 (digits:
one 8×8 image; MiniLM: sequence 128), separately from the guard's own measurement, and scored with the
zoo metric against fp32 (digits: test accuracy; MiniLM: mean cosine and nearest-neighbour agreement).
Ratios < 1 are faster than fp32 in the same call. The machine is shared: ratios move by ~10 %.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

import onnxcomp  # noqa: E402
from onnxcomp import models as zoo  # noqa: E402
from onnxcomp.errors import OnnxcompError  # noqa: E402
from onnxcomp.ir.graph import input_specs  # noqa: E402
from onnxcomp.ir.modelio import load_proto  # noqa: E402
from onnxcomp.runtime import measure_latency, ort_session, runner, synthetic_feed  # noqa: E402

PRESETS = (
    "int8",
    "w8a8-smoothquant",
    "w8a8-mixed",
    "w8a8-dynamic",
    "w8a16",
    "w4a16-rtn",
    "w4a16-awq",
    "w4a16-gptq",
    "w4a16-awq-gptq",
    "prune",
    "prune-int8",
    "prune-w4a16",
)


def headline(kind: str, metric: dict) -> str:
    if kind == "minilm":
        return f"cos {metric['mean_cosine']:.4f} / NN {metric['nn_agreement']:.3f}"
    return f"acc {metric['accuracy']:.4f}"


def row(kind: str, preset: str, runs: int, folder: Path) -> dict:
    source = zoo.onnx_path(kind)
    paths = {"unguarded": folder / f"{kind}.{preset}.plain.onnx", "guarded": folder / f"{kind}.{preset}.guarded.onnx"}
    try:
        onnxcomp.compress(
            str(source), preset, zoo.get(kind).calibration_feeds(), output=paths["unguarded"], speed_guard=False
        )
        guarded = onnxcomp.compress(
            str(source), preset, zoo.get(kind).calibration_feeds(), output=paths["guarded"], use_cache=False
        )
    except OnnxcompError as exc:
        return {"model": kind, "preset": preset, "error": str(exc)}
    guard = guarded.report["passes"][-1]["details"]
    sessions = {"fp32": ort_session(source, spinning=False)}
    sessions.update({name: ort_session(path, spinning=False) for name, path in paths.items()})
    feed = synthetic_feed(input_specs(load_proto(source)), 1, 128)
    latency = measure_latency(sessions, feed, runs=runs)
    fp32_ms = latency["fp32"]["median_ms"]
    metrics = {name: zoo.get(kind).compare(runner(sessions["fp32"]), runner(sessions[name])) for name in paths}
    return {
        "model": kind,
        "preset": preset,
        "fp32_ms": fp32_ms,
        "ratio": {name: latency[name]["median_ms"] / fp32_ms for name in paths},
        "bytes": {"fp32": source.stat().st_size, **{name: path.stat().st_size for name, path in paths.items()}},
        "metric": {name: headline(kind, m) for name, m in metrics.items()},
        "guard": {k: guard.get(k) for k in ("before", "after", "reverted_layers", "skipped")},
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | preset | unguarded × fp32 latency | guarded × fp32 latency | guard's own before → after | layers "
        "back in float | size MB unguarded → guarded | metric unguarded | metric guarded |",
        "|---|---|---:|---:|---|---:|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['preset']} | — | — | — | — | — | {r['error']} | |")
            continue
        g = r["guard"]
        own = g["skipped"] or f"{g['before']:.2f} → {g['after']:.2f}"
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['ratio']['unguarded']:.2f} | {r['ratio']['guarded']:.2f} | {own} | "
            f"{len(g['reverted_layers'] or [])} | {r['bytes']['unguarded'] / 1e6:.2f} → "
            f"{r['bytes']['guarded'] / 1e6:.2f} | {r['metric']['unguarded']} | {r['metric']['guarded']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--runs", type=int, default=100, help="interleaved latency runs per model (default 100)")
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.models.split(","):
            for preset in args.presets.split(","):
                rows.append(row(kind, preset, args.runs, Path(folder)))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    text = table(rows)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps(rows, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
