"""Int4 weight-only on all-MiniLM-L6-v2: onnxcomp RTN/GPTQ/AWQ side by side with ORT's MatMulNBitsQuantizer.

    .venv/bin/python benchmarks/int4_minilm.py --worker-nice 19 --runs 100   # all rows (~3.5 min on 2 cores)
    .venv/bin/python benchmarks/int4_minilm.py --rows fp32,rtn-g128-sym,ort-rtn-g128-sym --runs 10
    .venv/bin/python benchmarks/int4_minilm.py --json /tmp/int4_minilm.json

Each compile runs in a fresh worker process (the worker of benchmarks/int4_smollm2.py, with
model "minilm"), which reports the quantize wall time and its peak RSS (VmHWM); the parent kills
it at `--timeout` (`--ort-gptq-timeout` for ORT's GPTQ). Calibration for GPTQ and AWQ (ours and
ORT's GPTQ): `models.minilm.calibration_feeds()` (128 sentences, 8 batches of 16).
Accuracy: `models.minilm.compare` against the fp32 model on the 256 evaluation sentences
(mean and min cosine of mean-pooled embeddings, nearest-neighbour agreement).
Latency: batch 1 at 16 and at 128 tokens (synthetic feed), medians of interleaved runs of all
sessions (`onnxcomp.runtime.measure_latency`; 2 threads, thread spinning off: see
`int4_smollm2.latency_session`), as a ratio to fp32.
Defaults differ between the tools: onnxcomp's w4a16 recipes also quantize the word-embedding table
(`quantize_embedding`), keep output layers at 8 bits and set accuracy_level 4 (int8 activations
inside MatMulNBits); ORT's MatMulNBitsQuantizer leaves Gather tables in fp32 and its
accuracy_level unset (fp32 compute).
"""

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.int4_smollm2 import HERE as WORKER_SCRIPT  # noqa: E402
from benchmarks.int4_smollm2 import (  # noqa: E402
    add_arguments,
    cleanup,
    compile_cells,
    compile_rows,
    fmt,  # noqa: E402
    open_sessions,
    ort_row,
    ours,
    parse_rows,
    worker_main,
    write_json,
)
from benchmarks.int8_minilm import cell, score_rows  # noqa: E402

GRID = [(g, s) for g in (32, 128) for s in ("sym", "asym")]
ROWS = {
    "fp32": None,
    **dict(ours(algo, g, s) for algo in ("rtn", "gptq", "awq") for g, s in GRID),
    **dict(ort_row("rtn", g, s) for g, s in GRID),
    **dict([ort_row("gptq", 128, "sym")]),
}
SEQUENCES = (16, 128)


def measure(results: dict, runs: int) -> None:
    import onnx

    from onnxcomp import models
    from onnxcomp.ir.graph import input_specs
    from onnxcomp.runtime import measure_latency, synthetic_feed

    module = models.get("minilm")
    src = str(models.onnx_path("minilm"))
    timed = open_sessions(results)  # latency sessions (spinning off), sizes, and a load error as the row's error
    for key, r in results.items():
        r.update(key=key, label=key)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    scored = score_rows(
        module,
        src,
        list(results.values()),
        module.evaluation_feeds(),
        log,
        lambda m: f"mean cosine {m['mean_cosine']:.4f}, NN agreement {m['nn_agreement']:.3f}",
    )
    sessions = {k: v for k, v in timed.items() if k in scored}
    specs = input_specs(onnx.load(src))
    for seq in SEQUENCES:
        log(f"latency batch 1, sequence {seq}: {len(sessions)} sessions interleaved, {runs} runs")
        for row, t in measure_latency(sessions, synthetic_feed(specs, 1, seq), runs, warmup=3).items():
            results[row][f"latency_seq{seq}_ms"] = t["median_ms"]
            results[row][f"latency_seq{seq}_p90_ms"] = t["p90_ms"]


def table(rows: list[str], results: dict) -> str:
    base = results["fp32"]
    lat_heads = " | ".join(f"latency b1 seq {s} (× fp32)" for s in SEQUENCES)
    lines = [
        f"| model | mean cosine | min cosine | NN agree | size MB | size × fp32 | {lat_heads} | quantize s | "
        "peak RSS MB | note |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(SEQUENCES) + "---:|---:|---|",
    ]
    for row in rows:
        r = results[row]
        secs, rss = compile_cells(r)
        if r.get("error") or "mean_cosine" not in r:
            dashes = " | ".join("—" for _ in range(5 + len(SEQUENCES)))
            lines.append(f"| {row} | {dashes} | {secs} | {rss} | fails: {cell(r.get('error'))} |")
            continue
        lat = []
        for s in SEQUENCES:
            ms = r.get(f"latency_seq{s}_ms")
            ratio = fmt(ms / base[f"latency_seq{s}_ms"] if ms else None, ".2f")
            lat.append(ratio + (f" ({ms:.2f} ms)" if row == "fp32" and ms else ""))
        lines.append(
            f"| {row} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | {r['nn_agreement']:.3f} | "
            f"{r['size_mb']:.1f} | "
            f"{r['size_mb'] / base['size_mb']:.3f} | {' | '.join(lat)} | {secs} | {rss} | |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, ROWS, runs=50)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    rows = parse_rows(args, parser, ROWS)
    if "fp32" not in rows:
        rows.insert(0, "fp32")
    workdir = Path(tempfile.mkdtemp(prefix="int4_minilm."))
    try:
        results = compile_rows("minilm", rows, ROWS, workdir, args, script=WORKER_SCRIPT)
        measure(results, args.runs)
    finally:
        cleanup(workdir, args.keep)
    write_json(args.json, results, workdir=str(workdir), runs=args.runs, sequences=list(SEQUENCES))
    print(table(rows, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
