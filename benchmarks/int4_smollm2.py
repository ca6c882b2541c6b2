"""Int4/int8 weight-only on SmolLM2-135M: onnxcomp RTN/GPTQ/AWQ side by side with ORT's MatMulNBitsQuantizer.

(ORT's matmul_nbits_quantizer; the issue's MatMul4BitsQuantizer was renamed.)

    .venv/bin/python benchmarks/int4_smollm2.py                       # all rows (long: ~1 h on 2 cores)
    .venv/bin/python benchmarks/int4_smollm2.py --rows fp32,rtn-g128-sym,ort-rtn-g128-sym   # a subset
    .venv/bin/python benchmarks/int4_smollm2.py --rows fp32,ort-gptq-g128-sym --timeout 2400 --json /tmp/r.json

Every compile runs in a fresh Python process (the worker in this file, shared with
benchmarks/int4_minilm.py) that reports its wall time and peak RSS (VmHWM) and writes the model
to its own temp folder (the worker's cwd: ORT's tools write files there). Its stdout and stderr go
to `worker.log` beside the model; the parent also samples the worker's VmHWM every second, so a
worker killed at `--timeout` still reports its elapsed time, peak RSS so far and last log line.
A recipe maps to its passes generically (`onnxcomp.passes.recipes.load_recipe`): `group_size` and
`symmetric` go to every weight-only pass of the recipe, and calibration feeds are given when a pass
of the recipe requires them. A recipe that does not exist yet is a row with its error.
The quantize time excludes imports, model export and tokenizing the calibration text (both tools
get the feeds ready before the clock starts); the peak RSS is the whole worker's.

Perplexity: `models.smollm2.compare` (40 held-out windows of 256 tokens) against the fp32 model
run in ONNX Runtime. Latency: batch 1 at 1 token (the decode regime without a KV cache) and at
256 tokens, medians of interleaved runs of all sessions (`onnxcomp.runtime.measure_latency`;
sessions with 2 threads and thread spinning off, see `latency_session`), as a ratio to fp32.
Calibration for GPTQ and AWQ (ours and ORT's GPTQ): `models.smollm2.calibration_feeds()`
(16 windows of 256 tokens).
Q4_1 caveat: the GGUF weights already passed through group-32 asymmetric 4-bit quantization, so
group-32 asymmetric rows look unrealistically good; group 128 and symmetric rows are the honest ones.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.int8_minilm import cell, environment, one_line, ort_reader, timed_compile  # noqa: E402
from onnxcomp.runtime import ort_session  # noqa: E402

RECIPES = {"rtn": "w4a16-rtn", "gptq": "w4a16-gptq", "awq": "w4a16-awq", "awq-gptq": "w4a16-awq-gptq"}
Q4_1_NOTE = "Q4_1 caveat: the GGUF passed through group-32 asymmetric 4-bit"


def ours(algo: str, group: int, scheme: str) -> tuple[str, dict]:
    return f"{algo}-g{group}-{scheme}", {
        "tool": "onnxcomp",
        "recipe": RECIPES[algo],
        "group_size": group,
        "symmetric": scheme == "sym",
    }


def ort_row(algo: str, group: int, scheme: str) -> tuple[str, dict]:
    return f"ort-{algo}-g{group}-{scheme}", {
        "tool": "ort",
        "algo": algo,
        "group_size": group,
        "symmetric": scheme == "sym",
    }


GRID = [(32, "sym"), (32, "asym"), (64, "sym"), (128, "sym"), (128, "asym")]
ROWS = {
    "fp32": None,
    **dict(ours("rtn", g, s) for g, s in GRID),
    **dict(ours("gptq", g, s) for g, s in GRID),
    **dict(ours("awq", g, s) for g in (32, 64, 128) for s in ("sym", "asym")),
    **dict(ours("awq-gptq", g, s) for g in (32, 128) for s in ("sym", "asym")),
    "w8a16": {"tool": "onnxcomp", "recipe": "w8a16", "group_size": 128, "symmetric": True},
    **dict(ort_row("rtn", g, s) for g, s in GRID),
    **dict([ort_row("gptq", 128, "sym")]),
}


# ----------------------------------------------------------------------------------------
# Worker (also used by benchmarks/int4_minilm.py): one compile in a fresh process
# ----------------------------------------------------------------------------------------
def onnxcomp_plan(recipe: str, group_size: int, symmetric: bool) -> tuple[dict, bool]:
    """(per-pass options, needs calibration) for a recipe: group_size/symmetric for each of its
    weight-only passes. Raises OnnxcompError ("unknown recipe ...") for a recipe that does not exist."""
    from onnxcomp.passes import PASSES
    from onnxcomp.passes.recipes import load_recipe

    steps = load_recipe(recipe)
    names = [name for name, _ in steps if name.startswith("quantize_weight_only")]
    if not names:
        raise ValueError(f"recipe {recipe!r} has no weight-only pass")
    needs = any(PASSES[name].needs_calibration for name, _ in steps)
    return {name: {"group_size": group_size, "symmetric": symmetric} for name in names}, needs


def _resolve(target: str):
    import importlib

    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def worker(spec: dict) -> dict:
    """Compile one row of `spec["model"]` (a zoo name) to `spec["out"]`; returns timings and the error."""
    import logging

    import onnx

    import onnxcomp
    from onnxcomp import models

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = spec.get("model", "smollm2")
    module = models.get(name)
    src = str(models.onnx_path(name))
    info: dict = {}
    calib = None
    try:  # resolve the recipe and build the feeds before the clock; a failure is the row's error
        if spec["tool"] == "onnxcomp":
            options, needs = onnxcomp_plan(spec["recipe"], spec["group_size"], spec["symmetric"])
            for pass_name, extra in spec.get("options", {}).items():  # e.g. plan_precision's size_budget
                options.setdefault(pass_name, {}).update(extra)
            calib = module.calibration_feeds() if needs else None
            plan = _resolve(spec["plan"])(src) if "plan" in spec else None  # "module:function" → PrecisionPlan
        else:
            from onnxruntime.quantization import matmul_nbits_quantizer as mq

            calib = module.calibration_feeds() if spec["algo"] == "gptq" else None
            model = onnx.load(src)
    except Exception as exc:
        return {"error": one_line(exc), "seconds": None, "peak_rss_bytes": None}

    def compile_model():
        if spec["tool"] == "onnxcomp":
            onnxcomp.compress(
                src,
                spec["recipe"],
                calibration=calib,
                options=options,
                output=spec["out"],
                use_cache=False,
                precision_plan=plan,
            )
            return
        if spec["algo"] == "rtn":
            config = mq.DefaultWeightOnlyQuantConfig(block_size=spec["group_size"], is_symmetric=spec["symmetric"])
        else:
            # ORT's GPTQ iterates over (a deepcopy of) the reader; its `block_size` is GPTQ's column
            # block, the group size comes from the quantizer's block_size below.
            config = mq.GPTQWeightOnlyQuantConfig(calibration_data_reader=ort_reader(calib))
        quant = mq.MatMulNBitsQuantizer(
            model, block_size=spec["group_size"], is_symmetric=spec["symmetric"], algo_config=config
        )
        quant.process()
        quant.model.save_model_to_file(spec["out"], use_external_data_format=False)

    return timed_compile(info, compile_model)


def _vmhwm_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _last_log_line(path: Path) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    return parts[-1][:250] if parts else ""


def run_worker(spec: dict, timeout: float = 1500, script: Path = HERE, nice: int = 0) -> dict:
    """Run `script --worker spec` in a fresh interpreter, cwd = the output's folder, output to worker.log there.
    Returns the worker's info (seconds, peak_rss_bytes, error) or, when it dies or runs past
    `timeout`, an error with the elapsed time, the peak RSS sampled so far and the log's last line."""
    folder = Path(spec["out"]).parent
    result_path, log_path = folder / "result.json", folder / "worker.log"
    spec = {**spec, "result": str(result_path)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    peak = 0
    with open(log_path, "wb") as log:
        prefix = ["nice", "-n", str(nice)] if nice else []
        proc = subprocess.Popen(
            [*prefix, sys.executable, str(script), "--worker", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
        )
        while proc.poll() is None:
            peak = max(peak, _vmhwm_bytes(proc.pid) or 0)
            if time.perf_counter() - start > timeout:
                proc.kill()
                proc.wait()
                elapsed = time.perf_counter() - start
                return {
                    "error": f"timed out after {elapsed:.0f} s (peak RSS so far {peak / 2**20:.0f} MB); "
                    f"last log line: {_last_log_line(log_path)}",
                    "seconds": None,
                    "peak_rss_bytes": None,
                    "timeout_elapsed_s": elapsed,
                    "timeout_peak_rss_bytes": peak,
                    "log": str(log_path),
                }
            time.sleep(1)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not result_path.exists():
        return {
            "error": f"worker exited with code {proc.returncode} after {elapsed:.0f} s "
            f"(peak RSS {peak / 2**20:.0f} MB): {_last_log_line(log_path)}",
            "seconds": None,
            "peak_rss_bytes": None,
            "log": str(log_path),
        }
    info = json.loads(result_path.read_text())
    info.update(process_seconds=elapsed, log=str(log_path))
    return info


def compile_rows(model: str, rows: list[str], table: dict, workdir: Path, args, script: Path = HERE) -> dict:
    """Compile every row (fp32 is the source) in its own worker.

    Returns {row: info with "path" when it produced one}."""
    from onnxcomp import models

    src = str(models.onnx_path(model))  # export once here, not in the workers
    results = {}
    for row in rows:
        if table[row] is None:
            results[row] = {"path": src, "error": None}
            continue
        spec = {**table[row], "model": model, "out": str(workdir / row / "model.onnx")}
        Path(spec["out"]).parent.mkdir(parents=True)
        limit = args.ort_gptq_timeout if spec.get("tool") == "ort" and spec.get("algo") == "gptq" else args.timeout
        print(f"compiling {row} (timeout {limit:.0f} s) ...", file=sys.stderr, flush=True)
        info = run_worker(spec, limit, script, args.worker_nice)
        if not info.get("error"):
            info["path"] = spec["out"]
        results[row] = info
        secs = f"{info['seconds']:.1f} s" if info.get("seconds") else ""
        print(f"  {row}: {secs} {info.get('error') or ''}", file=sys.stderr, flush=True)
    return results


def latency_session(path: str):
    """`onnxcomp.runtime.ort_session` (2 intra-op threads, 1 inter-op) with thread spinning off: with
    spinning on, the idle pool of the session that just ran keeps both cores busy while the next one
    runs, which inflates short interleaved runs (MiniLM b1 seq 16: 2.6 ms alone, ~15 ms with 6
    interleaved copies; 3.8 ms each with spinning off)."""
    return ort_session(path, 2, spinning=False)


def open_sessions(results: dict) -> dict:
    """A `latency_session` per row with a model; a model ORT cannot load becomes the row's error."""
    sessions = {}
    for row, r in results.items():
        if r.get("error") or not r.get("path"):
            continue
        try:
            sessions[row] = latency_session(r["path"])
        except Exception as exc:
            r["error"] = f"ORT cannot load it: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            continue
        r["size_bytes"] = os.path.getsize(r["path"])
        r["size_mb"] = r["size_bytes"] / 1e6
    return sessions


def add_arguments(parser: argparse.ArgumentParser, rows: dict, runs: int) -> None:
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rows", default=",".join(rows), help=f"comma-separated rows (default: all): {', '.join(rows)}"
    )
    parser.add_argument("--runs", type=int, default=runs, help=f"latency runs per session (default {runs})")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per compile worker (default 1500)")
    parser.add_argument(
        "--ort-gptq-timeout", type=float, default=2400, help="seconds for the ORT GPTQ worker (default 2400)"
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="run the compile workers under `nice -n N` (the parent's latency runs keep their priority)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the results (every number, the command, the environment) here"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the compiled models and worker logs (default: removed at the end)"
    )


def cleanup(workdir: Path, keep: bool) -> None:
    import shutil

    if keep:
        print(f"models and worker logs kept in {workdir}", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_rows(args, parser, table: dict) -> list[str]:
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in table]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)} (known: {', '.join(table)})")
    return rows


def write_json(path: Path | None, results: dict, **extra) -> None:
    if path is None:
        return
    import shlex

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    rows = {k: {f: v for f, v in r.items() if f not in ("path", "result")} for k, r in results.items()}
    path.write_text(
        json.dumps({"command": command, "environment": environment(), **extra, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {path}", file=sys.stderr, flush=True)


def worker_main(args) -> int:
    spec = json.loads(args.worker)
    info = worker(spec)
    Path(spec["result"]).write_text(json.dumps(info))
    return 0


def fmt(value, spec: str) -> str:
    return format(value, spec) if value is not None else "—"


def compile_cells(r: dict) -> tuple[str, str]:
    rss = r.get("peak_rss_bytes")
    return fmt(r.get("seconds"), ".1f"), fmt(rss / 2**20 if rss else None, ".0f")


# ----------------------------------------------------------------------------------------
# SmolLM2
# ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, ROWS, runs=30)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    rows = parse_rows(args, parser, ROWS)
    if "fp32" not in rows:
        rows.insert(0, "fp32")
    workdir = Path(tempfile.mkdtemp(prefix="int4_smollm2."))
    try:
        results = compile_rows("smollm2", rows, ROWS, workdir, args)
        measure(results, args.runs)
    finally:
        cleanup(workdir, args.keep)
    write_json(args.json, results, workdir=str(workdir), runs={"seq1": args.runs * 4, "seq256": args.runs})
    print(table(rows, results))
    return 0


def measure(results: dict, runs: int) -> None:
    from onnxcomp import models
    from onnxcomp.runtime import measure_latency

    sessions = open_sessions(results)
    module = models.get("smollm2")
    feeds = module.evaluation_feeds()
    ref = sessions["fp32"]
    for row, s in sessions.items():
        print(f"perplexity {row} ...", file=sys.stderr, flush=True)
        results[row]["ppl"] = module.compare(lambda f: ref.run(None, f)[0], lambda f, s=s: s.run(None, f)[0], feeds)
    one = {k: v[:1, :1] for k, v in feeds[0].items()}
    full = {k: v[:1, :256] for k, v in feeds[0].items()}
    for key, feed, n in (("seq1", one, runs * 4), ("seq256", full, runs)):
        for row, t in measure_latency(sessions, feed, n, warmup=3).items():
            results[row][f"latency_{key}_ms"] = t["median_ms"]
            results[row][f"latency_{key}_p90_ms"] = t["p90_ms"]


def table(rows: list[str], results: dict) -> str:
    base = results["fp32"]
    lines = [
        "| model | perplexity | × fp32 ppl | size MB | size × fp32 | latency b1 seq 1 (× fp32) | latency b1 "
        "seq 256 (× fp32) | "
        "quantize s | peak RSS MB | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        r = results[row]
        secs, rss = compile_cells(r)
        if r.get("error") or "ppl" not in r:
            lines.append(f"| {row} | — | — | — | — | — | — | {secs} | {rss} | fails: {cell(r.get('error'))} |")
            continue
        ppl = r["ppl"]
        l1, l256 = r["latency_seq1_ms"] / base["latency_seq1_ms"], r["latency_seq256_ms"] / base["latency_seq256_ms"]
        note = Q4_1_NOTE if "g32-asym" in row else ""
        fp = f" ({r['latency_seq1_ms']:.2f} ms)" if row == "fp32" else ""
        fp256 = f" ({r['latency_seq256_ms']:.1f} ms)" if row == "fp32" else ""
        lines.append(
            f"| {row} | {ppl['perplexity']:.2f} | {ppl['ratio']:.3f} | {r['size_mb']:.1f} | "
            f"{r['size_mb'] / base['size_mb']:.3f} | {l1:.2f}{fp} | {l256:.2f}{fp256} | {secs} | {rss} | {note} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
