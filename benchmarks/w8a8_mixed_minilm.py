"""W8A8 with float fallback on all-MiniLM-L6-v2: onnxcomp's `w8a8-mixed` and its variants beside ORT's tool.

    ONNXCOMP_CACHE=$PWD/.cache .venv/bin/python benchmarks/w8a8_mixed_minilm.py --out /tmp/w8a8_mixed.md
    .venv/bin/python benchmarks/w8a8_mixed_minilm.py --rows fp32,w8a8-mixed --runs 20   # quicker
    .venv/bin/python benchmarks/w8a8_mixed_minilm.py --latency-only --runs 100          # time again (quiet machine)

Every row is compiled from the cached fp32 export with the same 128 calibration sentences
(`models.minilm.calibration_feeds()`), written to `--workdir` (an existing row file there is reused:
delete it after changing the code), and scored against fp32 on two
disjoint sentence sets: dev (`dev_feeds`, where options are chosen) and evaluation
(`evaluation_feeds`, the held-out judge). Latency: batch 1 × sequence 128, ONNX Runtime CPU, two
threads, every session timed in one interleaved `measure_latency` call, so load hits all alike.
ORT rows: `quantize_static` (QDQ, per channel, MinMax, uint8 activations, ORT's "transformer" configuration —
MatMuls with constant weights only, after `quant_pre_process`) and `quantize_dynamic` (per channel, QInt8).
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

import onnx  # noqa: E402

import onnxcomp  # noqa: E402
from benchmarks.int8_minilm import activation_matmuls, ort_preprocess, ort_reader  # noqa: E402
from onnxcomp import models as zoo  # noqa: E402
from onnxcomp.ir.graph import input_specs  # noqa: E402
from onnxcomp.ir.modelio import load_proto  # noqa: E402
from onnxcomp.passes.recipes import PRESETS  # noqa: E402
from onnxcomp.runtime import measure_latency, ort_session, synthetic_feed  # noqa: E402


def with_steps(preset: str, before: str, steps: list) -> list:
    """The preset's steps with `steps` inserted before the pass `before`."""
    recipe = list(PRESETS[preset])
    names = [name for name, _ in recipe]
    recipe[names.index(before) : names.index(before)] = steps
    return recipe


def without_split() -> list:
    """The preset as it was before `split_outliers`: no split, no cap on the float layers' weights."""
    return [(n, {} if n == "plan_fallback" else o) for n, o in PRESETS["w8a8-mixed"] if n != "split_outliers"]


SPLIT = [("split_outliers", {}), ("calibrate", {})]
WIDE_SPLIT = {"max_channels": 16, "ratio": 1.3}  # more channels out of the int8 path than the default 4 / 2.0
ROWS = {
    "fp32": None,
    "ort-static": "ort_static",
    "ort-dynamic": "ort_dynamic",
    "w8a8-smoothquant": "w8a8-smoothquant",
    "w8a8-smoothquant + split_outliers": with_steps("w8a8-smoothquant", "quantize_qdq", SPLIT),
    "w8a8-mixed before split_outliers": without_split(),
    "w8a8-mixed (default)": "w8a8-mixed",
    "w8a8-mixed with nearest weight rounding": [
        (
            "w8a8-mixed",
            {"plan_fallback": {"weight_rounding": "nearest"}, "quantize_qdq": {"weight_rounding": "nearest"}},
        )
    ],
    "all int8 + split (GPTQ weights)": [("w8a8-mixed", {"plan_fallback": {"max_fallback": 0.0}})],
    "w8a8-mixed without the weights cap": [("w8a8-mixed", {"plan_fallback": {"max_fallback_weights": 1.0}})],
    "w8a8-mixed error_ratio 0.8": [("w8a8-mixed", {"plan_fallback": {"error_ratio": 0.8}})],
    "w8a8-mixed activations auto": [("w8a8-mixed", {"plan_fallback": {"activations": "auto"}})],
    "all int8 dynamic + split": [("w8a8-mixed", {"plan_fallback": {"activations": "dynamic", "max_fallback": 0.0}})],
    "all int8 + split 16 (gap 1.3)": [
        ("w8a8-mixed", {"split_outliers": WIDE_SPLIT, "plan_fallback": {"max_fallback": 0.0}})
    ],
    "w8a8-mixed + split 16 (gap 1.3)": [("w8a8-mixed", {"split_outliers": WIDE_SPLIT})],
}


def recipe_of(spec):
    """A row spec as `compress` takes it: a preset name, a step list, or [(preset, overrides)]."""
    if isinstance(spec, list) and len(spec) == 1 and spec[0][0] in PRESETS:
        return spec[0][0], spec[0][1]
    return spec, None


def build(row: str, src: str, feeds: list[dict], out: Path) -> dict:
    spec = ROWS[row]
    if spec in ("ort_static", "ort_dynamic"):
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        pre = str(out.with_suffix(".pre.onnx"))
        ort_preprocess(src, pre)
        if spec == "ort_dynamic":
            quantize_dynamic(pre, str(out), per_channel=True, weight_type=QuantType.QInt8)
        else:
            quantize_static(
                pre,
                str(out),
                ort_reader(feeds),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,  # ORT's default int8 activations leave most MatMuls unfused on x86
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=activation_matmuls(onnx.load(pre)),
                extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
            )
        return {}
    recipe, options = recipe_of(spec)
    result = onnxcomp.compress(src, recipe, feeds, options=options, output=out)
    passes = {p["pass"]: p.get("details", {}) for p in result.report["passes"]}
    info = {}
    if "plan_fallback" in passes:
        info["float_layers"] = len(passes["plan_fallback"]["fallback"])
    if "split_outliers" in passes:
        info["split_channels"] = sum(len(s["channels"]) for s in passes["split_outliers"]["split"])
    return info


SKIPPED = {"mean_cosine": float("nan"), "nn_agreement": float("nan")}


def slug(row: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    parser.add_argument("--workdir", default="/tmp/w8a8_mixed_minilm")
    parser.add_argument("--runs", type=int, default=50, help="interleaved timing rounds")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--latency-only", action="store_true", help="time the rows (reused files), skip accuracy")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows: {', '.join(unknown)}")
    minilm = zoo.get("minilm")
    src = str(zoo.onnx_path("minilm"))
    feeds = minilm.calibration_feeds()
    dev, evaluation = minilm.dev_feeds(), minilm.evaluation_feeds()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reference = ort_session(src, spinning=False)

    def run_of(session):
        return lambda feed: session.run(None, feed)[0]

    results, sessions = {}, {}
    for index, row in enumerate(rows):
        path = Path(src) if ROWS[row] is None else workdir / f"{slug(row)}.onnx"
        saved = path.with_suffix(".json")
        if ROWS[row] is None:
            info = {}
        elif path.exists() and saved.exists():  # the same recipe gives the same bytes: reuse
            info = json.loads(saved.read_text())
        else:
            info = build(row, src, feeds, path)
            saved.write_text(json.dumps(info))
        session = ort_session(str(path), spinning=False)
        sessions[row] = session
        info["size_mb"] = path.stat().st_size / 1e6
        if not args.latency_only:
            info["dev"] = minilm.compare(run_of(reference), run_of(session), dev)
            info["evaluation"] = minilm.compare(run_of(reference), run_of(session), evaluation)
        results[row] = info
        print(f"{row}: {json.dumps(info)}", file=sys.stderr)
    feed = synthetic_feed(input_specs(load_proto(src)), 1, 128)  # what `onnxcomp eval` times
    latency = measure_latency(sessions, feed, runs=args.runs)
    base = latency[rows[0]]["median_ms"]
    lines = [
        "| row | float layers | split channels | dev cosine / NN | evaluation cosine / NN | size MB "
        f"| latency × {rows[0]} |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        r = results[row]
        d, e = r.get("dev", SKIPPED), r.get("evaluation", SKIPPED)
        lines.append(
            f"| {row} | {r.get('float_layers', '')} | {r.get('split_channels', '')} "
            f"| {d['mean_cosine']:.5f} / {d['nn_agreement']:.3f} | {e['mean_cosine']:.5f} / {e['nn_agreement']:.3f} "
            f"| {r['size_mb']:.1f} | {latency[row]['median_ms'] / base:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
