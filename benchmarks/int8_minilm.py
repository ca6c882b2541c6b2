"""int8 on all-MiniLM-L6-v2: onnxcomp side by side with onnxruntime.quantization.

    .venv/bin/python benchmarks/int8_minilm.py                     # full run (~10 min on 2 cores)
    .venv/bin/python benchmarks/int8_minilm.py --quick --out /tmp/int8_minilm.md   # smoke test
    .venv/bin/python benchmarks/int8_minilm.py --json > results.json

Every compile gets the same 128 calibration sentences (`models.minilm.calibration_feeds(128)`,
8 batches of 16, each padded to its longest sentence) and runs in a fresh Python process, which
reports its own wall time and peak RSS (VmHWM of its address space), the same way for
both tools. Accuracy is measured against the fp32 model on the 256 evaluation sentences;
latencies come from one `measure_latency` call per batch size with every session interleaved,
so the ratios against fp32 are taken under the same machine load.

Rows:
- fp32: the baseline export;
- onnxcomp `int8` recipe with each calibration method (calibration cache off);
- `quantize_static` (QDQ, per_channel=True) with each CalibrationMethod, after ORT's recommended
  `quant_pre_process`; a method that raises is a row with its error;
- `quantize_dynamic` (per_channel=True, QInt8 weights) as a reference;
- variants (skip with --no-variants), to show where ORT's static result comes from:
  the same four methods with the batches padded to 128 tokens (ORT's histogram calibrators
  stack all batches into one array, so they need equal shapes), and a "transformer" configuration
  (MatMul with constant weights only, no Q/DQ on MatMul outputs). See benchmarks/README.md.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
METHODS_OURS = ("minmax", "percentile", "entropy", "mse")
METHODS_ORT = ("MinMax", "Percentile", "Entropy", "Distribution")
SEQUENCE = 128
DEFAULT_OUT = Path(tempfile.gettempdir()) / "onnxcomp-bench" / "int8_minilm.md"


# ----------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------
def configurations(variants: bool) -> list[dict]:
    rows = [{"key": "fp32", "label": "fp32 (baseline)", "tool": "fp32"}]
    for m in METHODS_OURS:
        rows.append({"key": f"onnxcomp-{m}", "label": f"onnxcomp int8 · {m}", "tool": "onnxcomp", "method": m})
    for m in METHODS_ORT:
        rows.append({"key": f"ort-static-{m}", "label": f"ORT static QDQ · {m}", "tool": "ort_static", "method": m})
    rows.append({"key": "ort-dynamic", "label": "ORT dynamic · per-channel QInt8", "tool": "ort_dynamic"})
    if variants:
        for m in METHODS_ORT:
            rows.append(
                {
                    "key": f"ort-static-pad-{m}",
                    "label": f"ORT static QDQ · {m} · feeds padded to 128",
                    "tool": "ort_static",
                    "method": m,
                    "pad": True,
                }
            )
        for m in METHODS_ORT:
            rows.append(
                {
                    "key": f"ort-static-tuned-{m}",
                    "label": f"ORT static QDQ, weight MatMuls only · {m} · padded",
                    "tool": "ort_static",
                    "method": m,
                    "pad": True,
                    "tuned": True,
                }
            )
    return rows


# ----------------------------------------------------------------------------------------
# Worker: one compile in a fresh process
# ----------------------------------------------------------------------------------------
def _rss_peak_bytes() -> int:
    """Peak RSS of this process's own address space (VmHWM). getrusage's ru_maxrss survives
    exec, so a worker started by a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]


def pad_feeds(feeds: list[dict], pad_id: int) -> list[dict]:
    import numpy as np

    out = []
    for feed in feeds:
        width = SEQUENCE - feed["input_ids"].shape[1]
        out.append(
            {
                k: np.pad(v, ((0, 0), (0, width)), constant_values=pad_id if k == "input_ids" else 0)
                for k, v in feed.items()
            }
        )
    return out


def activation_matmuls(proto) -> list[str]:
    """MatMul nodes whose second input is computed at run time (attention scores and context)."""
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return sorted(n.name for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] not in constants)


def ort_preprocess(src: str, dst: str) -> dict:
    """ORT's recommended pre-processing; the default arguments fail on this export (see README)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(src, dst, auto_merge=True)
    return {"preprocess": "quant_pre_process(auto_merge=True)"}


def ort_reader(feeds: list[dict]):
    """ONNX Runtime's CalibrationDataReader over a list of feeds (rewindable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(feeds)

    return Reader()


def worker(spec: dict) -> dict:
    # Every worker imports the same modules and builds the same feeds before the clock starts,
    # so the baseline RSS is the same for both tools.
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    import onnxcomp
    import onnxcomp.models as zoo

    logging.disable(logging.WARNING)
    module = zoo.get("minilm")
    src = str(zoo.onnx_path("minilm"))
    feeds = module.calibration_feeds(128)
    if spec.get("pad"):
        feeds = pad_feeds(feeds, module.tokenizer().pad_token_id)
    out = spec["out"]
    info: dict = {
        "calibration_batches": len(feeds),
        "calibration_shapes": sorted({f["input_ids"].shape for f in feeds}),
    }
    info["calibration_shapes"] = [list(s) for s in info["calibration_shapes"]]

    def compile_model():
        tool = spec["tool"]
        if tool == "onnxcomp":
            result = onnxcomp.compress(
                src, "int8", calibration=feeds, options={"quantize_qdq": {"method": spec["method"]}}, use_cache=False
            )
            result.save(out)
            info["report_seconds"] = result.report["seconds"]
        elif tool == "ort_preprocess_check":  # do ORT's default pre-processing arguments work here?
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(src, out)
        else:
            pre = str(Path(out).with_suffix(".pre.onnx"))
            info.update(ort_preprocess(src, pre))
            if tool == "ort_dynamic":
                quantize_dynamic(pre, out, per_channel=True, weight_type=QuantType.QInt8)
            else:
                kwargs = {}
                if spec.get("tuned"):
                    kwargs = {
                        "op_types_to_quantize": ["MatMul"],
                        "nodes_to_exclude": activation_matmuls(onnx.load(pre)),
                        "extra_options": {"OpTypesToExcludeOutputQuantization": ["MatMul"]},
                    }
                act = QuantType.QUInt8 if spec["ort_activation"] == "uint8" else QuantType.QInt8
                quantize_static(
                    pre,
                    out,
                    ort_reader(feeds),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=act,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, spec["method"]),
                    **kwargs,
                )
            Path(pre).unlink(missing_ok=True)

    return timed_compile(info, compile_model)


def timed_compile(info: dict, compile_model) -> dict:
    """Run `compile_model()`, recording its wall time, this process's peak RSS and its error:
    a failing tool is a result (a row with its error), not a crash."""
    rss_before = _rss_peak_bytes()
    start = time.perf_counter()
    try:
        compile_model()
        info["error"] = None
    except Exception as exc:
        info["error"] = one_line(exc)
    info.update(seconds=time.perf_counter() - start, rss_before_bytes=rss_before, peak_rss_bytes=_rss_peak_bytes())
    return info


def run_worker(spec: dict, timeout: float = 900, script: Path = HERE) -> dict:
    """Run `script --worker spec` in a fresh interpreter; its stdout/stderr (ORT's prints) are captured."""
    result_path = Path(spec["out"]).with_suffix(".result.json")
    spec = {**spec, "result": str(result_path)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script), "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(spec["out"]).parent,
            env=env,
        )  # ORT writes temp files into the cwd
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "seconds": None, "peak_rss_bytes": None}
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {
            "error": f"worker exited with code {proc.returncode}: {tail[0][:250]}",
            "seconds": None,
            "peak_rss_bytes": None,
        }
    info = json.loads(result_path.read_text())
    info["process_seconds"] = time.perf_counter() - start
    return info


# ----------------------------------------------------------------------------------------
# Measurements in the parent process
# ----------------------------------------------------------------------------------------
def qdq_profile(path: str, top: int = 4) -> dict:
    """Which ops read a dequantized activation, and the largest per-tensor activation scales."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    init = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    dq_act = {}
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in init:
            q = producer.get(n.input[0])
            dq_act[n.output[0]] = q.input[0] if q is not None else n.input[0]
    consumers = Counter()
    for n in proto.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_act for i in n.input):
            consumers[n.op_type] += 1
    scales = []
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in init:
            s = numpy_helper.to_array(init[n.input[1]])
            if s.size == 1:
                p = producer.get(n.input[0])
                scales.append((float(s), n.input[0], p.op_type if p is not None else "graph input"))
    scales.sort(reverse=True)
    return {
        "ops_reading_quantized_activations": dict(sorted(consumers.items())),
        "quantized_activation_tensors": len(scales),
        "largest_activation_scales": [{"tensor": t, "producer": p, "scale": s} for s, t, p in scales[:top]],
    }


def environment() -> dict:
    import numpy
    import onnx
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "unknown", False
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": numpy.__version__,
        "onnxcomp_commit": commit + (" (dirty tree)" if dirty else ""),
    }


def score_rows(module, src: str, rows: list[dict], feeds: list[dict], log, describe) -> dict:
    """The zoo metric of every row that produced a model, against `src`; returns their sessions."""
    from onnxcomp.runtime import ort_session, runner

    reference = runner(ort_session(src))
    cache: dict[int, object] = {}

    def reference_run(feed):  # fp32 outputs computed once, reused for every candidate
        if id(feed) not in cache:
            cache[id(feed)] = reference(feed)
        return cache[id(feed)]

    sessions = {}
    for row in rows:
        if row.get("error") or not row.get("path"):
            continue
        try:
            session = ort_session(row["path"], spinning=False)
            metrics = module.compare(reference_run, runner(session), feeds)
        except Exception as exc:
            row["error"] = "evaluation failed: " + one_line(exc)
            continue
        row.update(metrics)
        sessions[row["key"]] = session
        log(f"  {row['label']}: {describe(metrics)}")
    return sessions


def evaluate(rows: list[dict], runs: int, warmup: int, log) -> None:
    """Accuracy vs fp32 and interleaved latency for every row that produced a model."""
    import onnx

    import onnxcomp.models as zoo
    from onnxcomp.ir.graph import input_specs
    from onnxcomp.runtime import measure_latency, synthetic_feed

    module = zoo.get("minilm")
    src = str(zoo.onnx_path("minilm"))
    sessions = score_rows(
        module,
        src,
        rows,
        module.evaluation_feeds(),
        log,
        lambda m: f"mean cosine {m['mean_cosine']:.4f}, NN agreement {m['nn_agreement']:.3f}",
    )
    specs = input_specs(onnx.load(src))
    for batch in (1, 8):
        log(
            f"latency batch {batch}, sequence {SEQUENCE}: {len(sessions)} sessions interleaved, {runs} runs "
            f"after {warmup} warm-up"
        )
        timings = measure_latency(sessions, synthetic_feed(specs, batch, SEQUENCE), runs=runs, warmup=warmup)
        base = timings["fp32"]["median_ms"]
        for row in rows:
            if row["key"] in timings:
                t = timings[row["key"]]
                row[f"b{batch}_ms"] = t["median_ms"]
                row[f"b{batch}_p90_ms"] = t["p90_ms"]
                row[f"b{batch}_ratio"] = t["median_ms"] / base


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------
def cell(text) -> str:
    return str(text).replace("|", "\\|")


def markdown(result: dict) -> str:
    env, settings, rows = result["environment"], result["settings"], result["rows"]
    fp32 = next(r for r in rows if r["key"] == "fp32")
    lines = [
        "## int8 on MiniLM-L6: onnxcomp vs onnxruntime.quantization",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{env['date']} · {env['cpu']} ({env['cores']} cores, shared) · onnxruntime {env['onnxruntime']} · "
        f"onnx {env['onnx']} · Python {env['python']} · onnxcomp {env['onnxcomp_commit']}",
        "",
        "| model | mean cosine | NN agree | latency b1 (× fp32) | latency b8 (× fp32) | size MB | size × fp32 "
        "| compile s | compile peak RSS MB | error / note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:

        def f(key, fmt, suffix=""):
            return format(r[key], fmt) + suffix if r.get(key) is not None else "—"

        if r["key"] == "fp32":
            b1 = f"1.00 ({r['b1_ms']:.1f} ms)" if r.get("b1_ms") else "—"
            b8 = f"1.00 ({r['b8_ms']:.1f} ms)" if r.get("b8_ms") else "—"
        else:
            b1, b8 = f("b1_ratio", ".2f"), f("b8_ratio", ".2f")
        size_ratio = f"{r['size_bytes'] / fp32['size_bytes']:.2f}" if r.get("size_bytes") else "—"
        rss = f"{r['peak_rss_bytes'] / 2**20:.0f}" if r.get("peak_rss_bytes") else "—"
        lines.append(
            f"| {cell(r['label'])} | {f('mean_cosine', '.4f')} | {f('nn_agreement', '.3f')} | {b1} | {b8} | "
            f"{f('size_mb', '.1f')} | {size_ratio} | {f('seconds', '.1f')} | {rss} | "
            f"{cell(r.get('error') or r.get('note') or '')} |"
        )
    before = [r["rss_before_bytes"] for r in rows if r.get("rss_before_bytes")]
    lines += [
        "",
        f"- Accuracy: mean-pooled embeddings of {settings['evaluation_sentences']} held-out sentences vs fp32 "
        "(cosine; NN agree = share of sentences whose nearest other sentence is unchanged).",
        f"- Latency: median of {settings['runs']} interleaved runs after {settings['warmup']} warm-up, ONNX "
        "Runtime CPU "
        f"EP, {settings['threads']} intra-op threads, synthetic feed at sequence {SEQUENCE}; ratio < 1 is "
        "faster than fp32 "
        "measured in the same call. The machine is shared: ratios move by ~10 % between runs.",
        "- Compile: wall time of the compile call (ORT: `quant_pre_process` + quantize; onnxcomp: `compress` with the "
        "calibration cache off, + save) in a fresh process; peak RSS of that process (VmHWM), which "
        + (
            f"already held {min(before) / 2**20:.0f}–{max(before) / 2**20:.0f} MB after imports and "
            "tokenizing, before the compile."
            if before
            else "includes imports and tokenizing."
        ),
        f"- Calibration: the same {settings['calibration_sentences']} sentences for every tool (8 batches of 16, each "
        'padded to its longest sentence); "padded to 128" rows pad every batch to 128 tokens (attention mask 0).',
        f"- ORT settings: QDQ, per_channel=True, activations {settings['ort_activation']} "
        "(ORT's CPU guidance for x86 without VNNI; `--ort-activation int8` gives ORT's default), weights QInt8, "
        f'reduce_range=False, pre-processing: {settings["ort_preprocess"]}. "Weight MatMuls only": '
        "op_types_to_quantize=[MatMul], the 12 activation×activation MatMuls excluded, "
        "OpTypesToExcludeOutputQuantization=[MatMul].",
    ]
    diag = result.get("diagnostics") or {}
    if diag:
        lines += ["", "### Where ORT's static result comes from (measured in this run)", ""]
        for key, prof in diag.items():
            ops = ", ".join(f"{op} {n}" for op, n in prof["ops_reading_quantized_activations"].items())
            big = "; ".join(
                f"`{s['tensor']}` ({s['producer']}) {s['scale']:.3g}" for s in prof["largest_activation_scales"]
            )
            lines.append(
                f"- `{key}`: {prof['quantized_activation_tensors']} activation tensors quantized; ops reading a "
                f"dequantized activation: {ops}. Largest activation scales: {big}."
            )
        if any(s["scale"] > 1e30 for p in diag.values() for s in p["largest_activation_scales"]):
            lines.append(
                "- A scale above 1e30 comes from the attention-mask bias (float32 min, -3.4e38) that the export "
                "adds to the attention scores: quantized with that range, every real score rounds to 0 and "
                "attention becomes uniform. Details and ablations: benchmarks/README.md."
            )
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown results file (default {DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout instead of the table")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 latency runs, 1 warm-up")
    p.add_argument("--runs", type=int, default=30, help="latency runs per session and batch size (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per session (default 3)")
    p.add_argument("--no-variants", action="store_true", help="skip the padded and weight-MatMul-only ORT rows")
    p.add_argument(
        "--ort-activation",
        choices=("uint8", "int8"),
        default="uint8",
        help="ORT activation type (default uint8: ORT's guidance for x86 CPUs; int8 is ORT's default)",
    )
    p.add_argument("--only", default="", help="comma-separated substrings of row keys to run (fp32 always runs)")
    p.add_argument("--workdir", type=Path, help="keep the compiled models here (default: a temporary folder, removed)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup = 3, 1
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be ≥ 1 and --warmup ≥ 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        info = worker(spec)
        Path(spec["result"]).write_text(json.dumps(info))
        return 0

    os.environ.setdefault("ONNXCOMP_CACHE", str(REPO / ".cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import onnxcomp.models as zoo

    src = zoo.onnx_path("minilm")  # export once here, not in racing workers
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="int8_minilm."))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = configurations(not args.no_variants)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        rows = [r for r in rows if r["key"] == "fp32" or any(w in r["key"] for w in wanted)]
    t0 = time.perf_counter()
    try:
        # Does ORT's recommended pre-processing run with its default arguments on this export?
        check = run_worker({"tool": "ort_preprocess_check", "out": str(workdir / "preprocess_check.onnx")})
        preprocess = "quant_pre_process(auto_merge=True)" + (
            f" (with default arguments it fails: {check['error']})" if check.get("error") else ""
        )
        log(f"ORT pre-processing: {preprocess}")

        for row in rows:
            if row["tool"] == "fp32":
                row.update(path=str(src), error=None)
            else:
                out = workdir / f"{row['key']}.onnx"
                spec = {**row, "out": str(out), "ort_activation": args.ort_activation}
                log(f"compiling {row['label']} ...")
                info = run_worker(spec)
                row.update(info)
                if not row.get("error"):
                    row["path"] = str(out)
                log(
                    f"  {row.get('seconds') or 0:.1f} s, peak RSS {(row.get('peak_rss_bytes') or 0) / 2**20:.0f} MB"
                    + (f", ERROR {row['error']}" if row.get("error") else "")
                )
            if row.get("path"):
                row["size_bytes"] = os.path.getsize(row["path"])
                row["size_mb"] = row["size_bytes"] / 1e6

        log("evaluating ...")
        evaluate(rows, args.runs, args.warmup, log)

        diagnostics = {}
        for key in ("ort-static-MinMax", "ort-static-tuned-MinMax"):
            row = next((r for r in rows if r["key"] == key and r.get("path")), None)
            if row:
                diagnostics[key] = qdq_profile(row["path"])
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "command": command,
        "environment": environment(),
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "threads": 2,
            "sequence": SEQUENCE,
            "batches": [1, 8],
            "calibration_sentences": 128,
            "evaluation_sentences": next((r.get("sentences") for r in rows if r.get("sentences")), None),
            "ort_activation": args.ort_activation,
            "ort_preprocess": preprocess,
        },
        "rows": [{k: v for k, v in r.items() if k not in ("path", "out", "result")} for r in rows],
        "diagnostics": diagnostics,
        "total_seconds": time.perf_counter() - t0,
    }
    text = markdown(result)
    write_atomic(args.out, text)
    log(f"wrote {args.out} ({result['total_seconds']:.0f} s in all)")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
