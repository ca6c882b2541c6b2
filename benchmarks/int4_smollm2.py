"""Int4/int8 weight-only on SmolLM2-135M: onnxcomp RTN/GPTQ side by side with ORT's MatMulNBitsQuantizer (matmul_nbits_quantizer; the issue's MatMul4BitsQuantizer was renamed).

    .venv/bin/python benchmarks/int4_smollm2.py                       # all rows (~25 min on 2 cores)
    .venv/bin/python benchmarks/int4_smollm2.py --rows fp32,rtn-g128-sym,ort-rtn-g128-sym   # a subset

Every compile runs in a fresh Python process that reports its wall time and peak RSS (VmHWM)
and writes the model to a temp folder (ORT's tools run with that folder as cwd, since they write
files there). Perplexity: `models.smollm2.compare` (40 held-out windows of 256 tokens) against
the fp32 model run in ONNX Runtime. Latency: batch 1 at 1 token (the decode regime without a KV
cache) and at 256 tokens, medians of interleaved runs of all sessions, as a ratio to fp32.
Calibration for GPTQ: `models.smollm2.calibration_feeds()` (16 windows of 256 tokens).
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

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.int8_minilm import _rss_peak_bytes, ort_reader  # noqa: E402

ROWS = {
    "fp32": None,
    **{f"rtn-g{g}-{s}": {"tool": "onnxcomp", "recipe": "w4a16-rtn", "group_size": g, "symmetric": s == "sym"}
       for g in (32, 128) for s in ("sym", "asym")},
    **{f"gptq-g{g}-{s}": {"tool": "onnxcomp", "recipe": "w4a16-gptq", "group_size": g, "symmetric": s == "sym"}
       for g in (32, 128) for s in ("sym", "asym")},
    "w8a16": {"tool": "onnxcomp", "recipe": "w8a16", "group_size": 128, "symmetric": True},
    **{f"ort-rtn-g{g}-{s}": {"tool": "ort", "algo": "rtn", "group_size": g, "symmetric": s == "sym"}
       for g in (32, 128) for s in ("sym", "asym")},
    "ort-gptq-g128-sym": {"tool": "ort", "algo": "gptq", "group_size": 128, "symmetric": True},
}


def worker(spec: dict) -> dict:
    from onnxcomp import models
    src = str(models.onnx_path("smollm2"))
    start = time.perf_counter()
    if spec["tool"] == "onnxcomp":
        import onnxcomp
        pass_name = {"w4a16-rtn": "quantize_weight_only", "w8a16": "quantize_weight_only",
                     "w4a16-gptq": "quantize_weight_only_gptq"}[spec["recipe"]]
        options = {pass_name: {"group_size": spec["group_size"], "symmetric": spec["symmetric"]}}
        calib = models.get("smollm2").calibration_feeds() if spec["recipe"] == "w4a16-gptq" else None
        onnxcomp.compress(src, spec["recipe"], calibration=calib, options=options, output=spec["out"], use_cache=False)
    else:
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as mq
        os.chdir(Path(spec["out"]).parent)
        model = onnx.load(src)
        if spec["algo"] == "rtn":
            config = mq.DefaultWeightOnlyQuantConfig(block_size=spec["group_size"], is_symmetric=spec["symmetric"])
        else:
            feeds = models.get("smollm2").calibration_feeds()

            # ORT's GPTQ iterates over (a deepcopy of) the reader
            config = mq.GPTQWeightOnlyQuantConfig(calibration_data_reader=ort_reader(feeds), block_size=spec["group_size"])
        quant = mq.MatMulNBitsQuantizer(model, block_size=spec["group_size"], is_symmetric=spec["symmetric"], algo_config=config)
        quant.process()
        quant.model.save_model_to_file(spec["out"], use_external_data_format=False)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": _rss_peak_bytes() / 2**20}


def run_worker(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, str(HERE), "--worker", json.dumps(spec)], capture_output=True, text=True, timeout=1500)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200], "seconds": None, "peak_rss_mb": None}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    import onnxruntime as ort
    from onnxcomp import models
    from onnxcomp.runtime import measure_latency
    src = str(models.onnx_path("smollm2"))
    workdir = Path(tempfile.mkdtemp(prefix="int4_smollm2."))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    results = {}
    for row in rows:
        if ROWS[row] is None:
            results[row] = {"path": src}
            continue
        spec = {**ROWS[row], "out": str(workdir / row / "model.onnx")}
        Path(spec["out"]).parent.mkdir()
        print(f"compiling {row} ...", file=sys.stderr, flush=True)
        results[row] = {**run_worker(spec), "path": spec["out"]}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {}
    for row, r in results.items():
        if "error" not in r:
            sessions[row] = ort.InferenceSession(r["path"], options, providers=["CPUExecutionProvider"])
            r["size_mb"] = os.path.getsize(r["path"]) / 1e6
    module = models.get("smollm2")
    feeds = module.evaluation_feeds()
    ref = sessions.get("fp32") or ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    for row, s in sessions.items():
        print(f"perplexity {row} ...", file=sys.stderr, flush=True)
        results[row]["ppl"] = module.compare(lambda f: ref.run(None, f)[0], lambda f, s=s: s.run(None, f)[0], feeds)
    one = {k: v[:1, :1] for k, v in feeds[0].items()}
    full = {k: v[:1, :256] for k, v in feeds[0].items()}
    lat1 = {k: v["median_ms"] / 1e3 for k, v in measure_latency(sessions, one, args.runs * 4, warmup=3).items()}
    lat256 = {k: v["median_ms"] / 1e3 for k, v in measure_latency(sessions, full, args.runs, warmup=3).items()}
    base = results.get("fp32", {})
    print("| model | perplexity | × fp32 ppl | size MB | size × fp32 | latency b1 seq 1 (× fp32) | latency b1 seq 256 (× fp32) | "
          "quantize s | peak RSS MB | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        r = results[row]
        if "error" in r:
            print(f"| {row} | — | — | — | — | — | — | {r['seconds'] or '—'} | {r['peak_rss_mb'] or '—'} | fails: {r['error']} |")
            continue
        ppl = r["ppl"]
        l1, l256 = lat1[row] / lat1["fp32"], lat256[row] / lat256["fp32"]
        note = "Q4_1 caveat: the GGUF passed through group-32 asymmetric 4-bit" if "g32-asym" in row else ""
        secs = f"{r['seconds']:.1f}" if r.get("seconds") else "—"
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "—"
        fp = f" ({lat1[row]*1e3:.2f} ms)" if row == "fp32" else ""
        fp256 = f" ({lat256[row]*1e3:.1f} ms)" if row == "fp32" else ""
        print(f"| {row} | {ppl['perplexity']:.2f} | {ppl['ratio']:.3f} | {r['size_mb']:.1f} | "
              f"{r['size_mb'] / base.get('size_mb', r['size_mb']):.3f} | {l1:.2f}{fp} | {l256:.2f}{fp256} | {secs} | {rss} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
