"""SmolLM2-135M calibrated on one text, evaluated on it and on another: static vs run-time activation ranges.

    ONNXCOMP_CACHE=$PWD/.cache .venv/bin/python benchmarks/domain_shift.py --workdir /tmp/ds --out /tmp/ds/table.md
    .venv/bin/python benchmarks/domain_shift.py --rows fp32,w8a8-smoothquant --windows 10    # quicker, noisier

Every row is compressed from the cached fp32 export with the built-in calibration windows (the
even-indexed pydoc topics, `models/text.py`) and the speed guard off, written to
`<workdir>/<row>.onnx` (an existing file there is reused: the same recipe gives the same bytes).
Perplexity on `--windows` held-out windows of 256 tokens from two sources: the odd-indexed pydoc
topics (in-domain: same manual, other pages) and the source code of nine standard-library modules
(`text.shifted_text`, shifted: code, not prose). Latency: batch 1, sequence 256, ONNX Runtime CPU,
2 threads, interleaved with fp32 in one `measure_latency` call per row (`--runs`, default 10).
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

import onnxcomp  # noqa: E402
from onnxcomp import models as zoo  # noqa: E402
from onnxcomp.ir.graph import input_specs  # noqa: E402
from onnxcomp.ir.modelio import load_proto  # noqa: E402
from onnxcomp.runtime import measure_latency, ort_session, synthetic_feed  # noqa: E402

ROWS = {
    "fp32": None,
    "w8a8-smoothquant": "w8a8-smoothquant",
    "w8a8-dynamic": "w8a8-dynamic",
    "w8a8-mixed": "w8a8-mixed",
    "w8a8-mixed-auto": [("w8a8-mixed", {"plan_fallback": {"activations": "auto"}})],
    "w4a16-rtn": "w4a16-rtn",
    "w4a16-awq-gptq": "w4a16-awq-gptq",
}


def build(row: str, source: Path, workdir: Path) -> Path:
    spec = ROWS[row]
    if spec is None:
        return source
    path = workdir / f"{row}.onnx"
    if not path.exists():
        recipe, options = (spec, None) if isinstance(spec, str) else spec[0]
        onnxcomp.compress(
            str(source), recipe, zoo.get("smollm2").calibration_feeds(), output=path, options=options,
            speed_guard=False,
        )  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--workdir", default="/tmp/onnxcomp-domain-shift")
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    smollm2 = zoo.get("smollm2")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = zoo.onnx_path("smollm2")
    feeds = {
        "in-domain": smollm2.evaluation_feeds()[: args.windows],
        "shifted": smollm2.shifted_feeds()[: args.windows],
    }
    latency_feed = synthetic_feed(input_specs(load_proto(source)), 1, 256)
    reference = ort_session(source, spinning=False)
    results = []
    for row in args.rows.split(","):
        path = build(row, source, workdir)
        session = reference if path == source else ort_session(path, spinning=False)
        entry = {"row": row, "bytes": path.stat().st_size}
        for name, windows in feeds.items():
            entry[name] = smollm2.perplexity(lambda f, s=session: s.run(None, f)[0], windows)
        timing = measure_latency({"fp32": reference, "row": session}, latency_feed, runs=args.runs)
        entry["latency_ratio"] = timing["row"]["median_ms"] / timing["fp32"]["median_ms"]
        results.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)
    base = next((r for r in results if r["row"] == "fp32"), None)
    lines = [
        "| row | ppl in-domain | × fp32 | ppl shifted | × fp32 | size MB | latency b1 seq 256 × fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = {k: f"{r[k] / base[k]:.3f}" if base else "—" for k in feeds}
        lines.append(
            f"| {r['row']} | {r['in-domain']:.2f} | {ratio['in-domain']} | {r['shifted']:.2f} | {ratio['shifted']} | "
            f"{r['bytes'] / 1e6:.1f} | {r['latency_ratio']:.2f} |"
        )
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
