"""W8A8 with SmoothQuant: onnxcomp side by side with onnxruntime.quantization.

    .venv/bin/python benchmarks/w8a8_smoothquant.py                          # SmolLM2-135M and MiniLM-L6
    .venv/bin/python benchmarks/w8a8_smoothquant.py --model minilm --quick   # smoke test
    .venv/bin/python benchmarks/w8a8_smoothquant.py --json > results.json

Every compile runs in a fresh Python process (in a scratch folder: ORT writes files into the
cwd) that reports its wall time and peak RSS, under a 12 GiB address-space limit so a tool that
runs out of memory becomes a row with its error. All tools get the same calibration feeds
(`models.<model>.calibration_feeds()`); accuracy is measured against fp32 on the model's
held-out evaluation data (SmolLM2: perplexity on 256-token windows; MiniLM: embedding cosine and
nearest-neighbour agreement); latency is one interleaved `measure_latency` call (batch 1,
sequence 128), so every ratio to fp32 is taken under the same machine load.

Rows: fp32; onnxcomp `int8` (plain W8A8: per-channel int8 weights, per-tensor static uint8
activations) with its default calibration (percentile) and with mse; onnxcomp
`w8a8-smoothquant` with α = 0.5 and with α = auto (the recipe's default); ORT `quantize_static`
(QDQ, per-channel) with each calibration method; ORT `quantize_static` with its SmoothQuant
option; ORT `quantize_dynamic` (per-channel QInt8) as a reference.
"""

import argparse
import json
import os
import resource
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.int8_minilm import environment, ort_reader, run_worker, score_rows, timed_compile, write_atomic  # noqa: E402

DEFAULT_OUT = Path(tempfile.gettempdir()) / "onnxcomp-bench" / "w8a8_smoothquant.md"
SEQUENCE = 128
MEMORY_LIMIT = 12 * 2**30
ORT_METHODS = {"minilm": ("MinMax", "Percentile", "Entropy", "Distribution"), "smollm2": ("MinMax", "Percentile")}


def configurations(kind: str) -> list[dict]:
    rows = [
        {"key": "fp32", "label": "fp32 (baseline)", "tool": "fp32"},
        {
            "key": "int8-percentile",
            "label": "onnxcomp int8, no smoothing · percentile (default)",
            "tool": "onnxcomp",
            "recipe": "int8",
        },
        {
            "key": "int8-mse",
            "label": "onnxcomp int8, no smoothing · mse",
            "tool": "onnxcomp",
            "recipe": "int8",
            "options": {"quantize_qdq": {"method": "mse"}},
        },
        {
            "key": "sq-0.5",
            "label": "onnxcomp w8a8-smoothquant · α = 0.5",
            "tool": "onnxcomp",
            "recipe": "w8a8-smoothquant",
            "options": {"smoothquant": {"alpha": 0.5}},
        },
        {
            "key": "sq-auto",
            "label": "onnxcomp w8a8-smoothquant · α = auto (default)",
            "tool": "onnxcomp",
            "recipe": "w8a8-smoothquant",
        },
    ]
    for method in ORT_METHODS[kind]:
        rows.append(
            {
                "key": f"ort-static-{method}",
                "label": f"ORT quantize_static QDQ · {method}",
                "tool": "ort_static",
                "method": method,
            }
        )
    rows.append(
        {
            "key": "ort-smoothquant",
            "label": "ORT quantize_static · SmoothQuant α = 0.5",
            "tool": "ort_static",
            "method": "MinMax",
            "smoothquant": True,
        }
    )
    rows.append({"key": "ort-dynamic", "label": "ORT quantize_dynamic · per-channel QInt8", "tool": "ort_dynamic"})
    return rows


# ----------------------------------------------------------------------------------------
# Worker: one compile in a fresh process
# ----------------------------------------------------------------------------------------
def worker(spec: dict) -> dict:
    import logging

    import onnxcomp
    import onnxcomp.models as zoo

    logging.disable(logging.WARNING)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    module = zoo.get(spec["model"])
    src = str(zoo.onnx_path(spec["model"]))
    feeds = module.calibration_feeds()
    out = spec["out"]
    info: dict = {"calibration_batches": len(feeds)}

    def compile_model():
        if spec["tool"] == "onnxcomp":
            result = onnxcomp.compress(
                src, spec["recipe"], calibration=feeds, options=spec.get("options"), use_cache=False
            )
            result.save(out)
            sq = next((p["details"] for p in result.report["passes"] if p["pass"] == "smoothquant"), None)
            if sq is not None:
                alphas = [g["alpha"] for g in sq["smoothed"]]
                info["note"] = (
                    f"{len(alphas)} groups smoothed ({sum(g['producer'] == 'inserted Mul' for g in sq['smoothed'])} "
                    f"with an inserted Mul), {len(sq['not_smoothed'])} left; α median "
                    f"{sorted(alphas)[len(alphas) // 2]}"
                    if alphas
                    else "nothing smoothed"
                )
        else:
            _ort_compile(spec, src, out, feeds)

    return timed_compile(info, compile_model)


def _ort_compile(spec: dict, src: str, out: str, feeds: list[dict]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if spec["tool"] == "ort_dynamic":
        quantize_dynamic(src, out, per_channel=True, weight_type=QuantType.QInt8)
        return

    # ORT's defaults (its CalibMaxIntermediateOutputs option ends in "No data is collected" here).
    extra = {"SmoothQuant": True, "SmoothQuantAlpha": 0.5} if spec.get("smoothquant") else {}
    quantize_static(
        src,
        out,
        ort_reader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, spec["method"]),
        extra_options=extra,
    )


# ----------------------------------------------------------------------------------------
# Measurements in the parent process
# ----------------------------------------------------------------------------------------
def evaluate(kind: str, rows: list[dict], windows: int, runs: int, warmup: int, log) -> None:
    import onnx

    import onnxcomp.models as zoo
    from onnxcomp.ir.graph import input_specs
    from onnxcomp.runtime import measure_latency, synthetic_feed

    module = zoo.get(kind)
    src = str(zoo.onnx_path(kind))
    feeds = module.evaluation_feeds()
    if kind == "smollm2":
        feeds = feeds[:windows]
    sessions = score_rows(module, src, rows, feeds, log, lambda metrics: _metric_text(kind, metrics))
    timings = measure_latency(
        sessions,
        synthetic_feed(input_specs(onnx.load(src, load_external_data=False)), 1, SEQUENCE),
        runs=runs,
        warmup=warmup,
    )
    base = timings["fp32"]["median_ms"]
    for row in rows:
        if row["key"] in timings:
            row["b1_ms"] = timings[row["key"]]["median_ms"]
            row["b1_ratio"] = row["b1_ms"] / base


def _metric_text(kind: str, row: dict) -> str:
    if kind == "smollm2":
        return f"perplexity {row['perplexity']:.2f} ({row['ratio']:.3f}x fp32)"
    return f"mean cosine {row['mean_cosine']:.4f}, NN agreement {row['nn_agreement']:.3f}"


def markdown(kind: str, result: dict) -> str:
    env, rows = result["environment"], result["rows"]
    fp32 = next(r for r in rows if r["key"] == "fp32")
    title = {"smollm2": "SmolLM2-135M", "minilm": "MiniLM-L6"}[kind]
    if kind == "smollm2":
        head = "| model | perplexity | × fp32 ppl |"

        def metric(r):
            return f"{r['perplexity']:.2f} | {r['ratio']:.3f}" if r.get("perplexity") is not None else "— | —"
    else:
        head = "| model | mean cosine | NN agree |"

        def metric(r):
            return f"{r['mean_cosine']:.4f} | {r['nn_agreement']:.3f}" if r.get("mean_cosine") is not None else "— | —"

    lines = [
        f"## W8A8 SmoothQuant on {title}: onnxcomp vs onnxruntime.quantization",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{env['date']} · {env['cpu']} ({env['cores']} cores, shared) · onnxruntime {env['onnxruntime']} · "
        f"onnxcomp {env['onnxcomp_commit']}",
        "",
        head + " latency b1 (× fp32) | size MB | size × fp32 | compile s | compile peak RSS MB | error / note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["key"] == "fp32":
            latency = f"1.00 ({r['b1_ms']:.1f} ms)" if r.get("b1_ms") else "—"
        else:
            latency = f"{r['b1_ratio']:.2f}" if r.get("b1_ratio") is not None else "—"
        size = (
            f"{r['size_bytes'] / 1e6:.1f} | {r['size_bytes'] / fp32['size_bytes']:.2f}"
            if r.get("size_bytes")
            else "— | —"
        )
        seconds = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "—"
        rss = f"{r['peak_rss_bytes'] / 2**20:.0f}" if r.get("peak_rss_bytes") else "—"
        note = (r.get("error") or r.get("note") or "").replace("|", "\\|")
        lines.append(f"| {r['label']} | {metric(r)} | {latency} | {size} | {seconds} | {rss} | {note} |")
    s = result["settings"]
    data = (
        f"perplexity on the first {s['windows']} held-out windows of 256 tokens"
        if kind == "smollm2"
        else "mean-pooled embeddings of 256 held-out sentences "
        "(cosine vs fp32; NN agree = nearest other sentence unchanged)"
    )
    lines += [
        "",
        f"- Accuracy: {data}. Latency: median of {s['runs']} interleaved runs after {s['warmup']} warm-up, batch 1, "
        f"sequence {SEQUENCE}, ONNX Runtime CPU, 2 threads; < 1 is faster than fp32 in the same call.",
        "- Compile: wall time of one compile in a fresh process (calibration cache off) and that process's peak RSS, "
        "imports and tokenized data included.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=("smollm2", "minilm", "both"), default="both")
    p.add_argument("--windows", type=int, default=40, help="SmolLM2 evaluation windows (default 40, all)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown results file (default {DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print JSON to stdout instead of the tables")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 latency runs, 1 warm-up, 4 windows")
    p.add_argument("--runs", type=int, default=50, help="latency runs per session (default 50, interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated substrings of row keys (fp32 always runs)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.windows = 3, 1, 4
    if args.runs < 1 or args.warmup < 0 or args.windows < 1:
        p.error("--runs and --windows must be ≥ 1 and --warmup ≥ 0")
    return args


def run_model(kind: str, args, command: str, log) -> dict:
    import onnxcomp.models as zoo

    src = zoo.onnx_path(kind)  # export once here, not in racing workers
    rows = configurations(kind)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        rows = [r for r in rows if r["key"] == "fp32" or any(w in r["key"] for w in wanted)]
    workdir = Path(tempfile.mkdtemp(prefix=f"w8a8_{kind}."))
    try:
        for row in rows:
            if row["tool"] == "fp32":
                row.update(path=str(src), error=None)
            else:
                out = workdir / f"{row['key']}.onnx"
                log(f"{kind}: compiling {row['label']} ...")
                row.update(run_worker({**row, "model": kind, "out": str(out)}, timeout=1800, script=HERE))
                if not row.get("error"):
                    row["path"] = str(out)
                log(f"  {row.get('seconds') or 0:.1f} s" + (f", ERROR {row['error']}" if row.get("error") else ""))
            if row.get("path"):
                row["size_bytes"] = sum(
                    f.stat().st_size for f in Path(row["path"]).parent.glob(Path(row["path"]).name + "*")
                )
        log(f"{kind}: evaluating ...")
        evaluate(kind, rows, args.windows, args.runs, args.warmup, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "command": command,
        "environment": environment(),
        "settings": {"runs": args.runs, "warmup": args.warmup, "windows": args.windows, "sequence": SEQUENCE},
        "rows": [{k: v for k, v in r.items() if k not in ("path", "out", "result")} for r in rows],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        Path(spec["result"]).write_text(json.dumps(worker(spec)))
        return 0
    os.environ.setdefault("ONNXCOMP_CACHE", str(REPO / ".cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    kinds = ("smollm2", "minilm") if args.model == "both" else (args.model,)
    results = {kind: run_model(kind, args, command, log) for kind in kinds}
    text = "\n".join(markdown(kind, results[kind]) for kind in kinds)
    write_atomic(args.out, text)
    log(f"wrote {args.out}")
    print(json.dumps(results, indent=2) if args.json else text, end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
