"""Deployment targets × recipes × zoo models: conformance, accuracy in ONNX Runtime CPU and OpenVINO, size.

    .venv/bin/python benchmarks/targets.py --models minilm --recipes int8 --out /tmp/targets.md
    .venv/bin/python benchmarks/targets.py                       # everything (SmolLM2 rows: tens of minutes)
    .venv/bin/python benchmarks/targets.py --json > targets.json
    .venv/bin/python benchmarks/targets.py --models minilm --recipes int8 --targets tensorrt --fp16
    .venv/bin/python benchmarks/targets.py --models minilm --recipes int8 --targets tensorrt --modelopt int8,int4
    .venv/bin/python benchmarks/targets.py --models digits,minilm --recipes all --targets tensorrt --check-only

Each row compresses the cached fp32 export (`onnxcomp.models.onnx_path`) with a preset, the model's
built-in calibration data and `compress(..., target=T)`, so the output passed T's conformance check
and the ONNX checker (full check) or the row records the refusal. Accuracy is the zoo metric against
the fp32 model run in ONNX Runtime CPU (MiniLM: mean cosine and nearest-neighbour agreement of the
embeddings on the evaluation sentences; SmolLM2: perplexity on the evaluation windows; digits: test
accuracy), measured with the compressed model run in ONNX Runtime CPU and — for the portable and
tensorrt outputs, which use standard ONNX only — in OpenVINO (`pip install onnxcomp[openvino]`), plus
the cosine between the two runtimes' outputs. TensorRT itself is not installable here: its column is
the TensorRT-placed QDQ math run in ORT CPU and OpenVINO. ort-cuda rows are conformance only (no GPU).
ort-cpu rows are also timed against fp32 in ONNX Runtime CPU (batch 1, 128 tokens for text models,
`--latency-runs` interleaved rounds, 2 threads). `--check-only` skips the accuracy and latency
columns (conformance, size and compress time only); `--recipes all` is every preset.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

import onnxcomp  # noqa: E402
from onnxcomp import models as zoo  # noqa: E402
from onnxcomp.emit import TENSORRT, target_named  # noqa: E402
from onnxcomp.emit.conformance import check_file  # noqa: E402
from onnxcomp.errors import OnnxcompError  # noqa: E402
from onnxcomp.ir.graph import input_specs  # noqa: E402
from onnxcomp.ir.modelio import load_proto  # noqa: E402
from onnxcomp.passes.recipes import preset_names  # noqa: E402
from onnxcomp.runtime import measure_latency, ort_session, synthetic_feed  # noqa: E402

MODELS = ("digits", "minilm", "smollm2")
TARGETS = ("ort-cpu", "ort-cuda", "tensorrt", "portable")
RECIPES = ("int8", "w8a8-smoothquant", "w4a16-awq-gptq")
RUNS_IN_OPENVINO = ("tensorrt", "portable")
RUNS_IN_ORT = ("ort-cpu", "tensorrt", "portable")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def ort_runner(path):
    session = ort_session(str(path))
    names = {i.name for i in session.get_inputs()}
    return lambda feed: session.run(None, {k: v for k, v in feed.items() if k in names})[0]


def openvino_runner(path):
    """`run(feed) -> first output` with OpenVINO's CPU plugin reading the ONNX file directly (f32)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = {port.any_name for port in compiled.inputs}
    request = compiled.create_infer_request()

    def run(feed):
        result = request.infer({k: v for k, v in feed.items() if k in names})
        return np.asarray(result[compiled.outputs[0]])

    return run


_REFERENCE_PERPLEXITY: dict = {}


def metric(kind: str, reference_run, candidate_run) -> dict:
    module = zoo.get(kind)
    if kind != "smollm2":
        return module.compare(reference_run, candidate_run)
    feeds = module.evaluation_feeds()
    if kind not in _REFERENCE_PERPLEXITY:  # the fp32 perplexity once per run (minutes), not once per row
        _REFERENCE_PERPLEXITY[kind] = module.perplexity(reference_run, feeds)
    ref, cand = _REFERENCE_PERPLEXITY[kind], module.perplexity(candidate_run, feeds)
    return {"perplexity_reference": ref, "perplexity": cand, "ratio": cand / ref}


def headline(kind: str, result: dict) -> str:
    if kind == "minilm":
        return f"cos {result['mean_cosine']:.4f} / NN {result['nn_agreement']:.3f}"
    if kind == "smollm2":
        return f"ppl {result['perplexity']:.2f} (×{result['ratio']:.4f})"
    return f"acc {result['accuracy']:.4f}"


def runtime_agreement(kind: str, run_a, run_b) -> float:
    """Mean cosine between two runtimes' outputs (flattened per feed) on the evaluation feeds."""
    feeds = zoo.get(kind).evaluation_feeds()[:8]
    cosines = []
    for feed in feeds:
        a, b = run_a(feed).astype(np.float64).ravel(), run_b(feed).astype(np.float64).ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return float(np.mean(cosines))


def run_row(
    kind: str,
    source: Path,
    recipe: str,
    target: str,
    reference_run,
    with_openvino: bool,
    fp16: bool = False,
    check_only: bool = False,
    latency_runs: int = 0,
) -> dict:
    row = {"model": kind, "recipe": recipe + (" +fp16" if fp16 else ""), "target": target}
    feeds = zoo.get(kind).calibration_feeds()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnx"
        start = time.perf_counter()
        try:
            result = onnxcomp.compress(
                source,
                recipe,
                feeds,
                output=out,
                tokenizer=zoo.tokenizer(kind),
                use_cache=True,
                target=target,
                fp16=fp16,
            )
        except OnnxcompError as exc:  # a refusal before work, or an output that failed the check
            status = "FAILS" if "does not conform" in str(exc) else "refused"
            return {**row, "conformance": f"{status}: {exc}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        row["conformance"] = "conforms" if result.report["conformance"]["conforms"] else "FAILS"
        row["bytes"] = out.stat().st_size
        if check_only:
            return row
        if target in RUNS_IN_ORT:
            ort_run = ort_runner(out)
            row["ort"] = metric(kind, reference_run, ort_run)
        if target == "ort-cpu" and latency_runs:  # batch 1 (× 128 tokens), interleaved with fp32
            feed = synthetic_feed(input_specs(load_proto(str(source))), 1, 128)
            pair = {"fp32": str(source), "out": str(out)}
            times = measure_latency({k: ort_session(v, spinning=False) for k, v in pair.items()}, feed, latency_runs)
            row["latency_ratio"] = times["out"]["median_ms"] / times["fp32"]["median_ms"]
        if with_openvino and target in RUNS_IN_OPENVINO:
            ov_run = openvino_runner(out)
            row["openvino"] = metric(kind, reference_run, ov_run)
            row["ort_vs_openvino_cosine"] = runtime_agreement(kind, ort_run, ov_run)
    return row


MODELOPT_PYTHON = os.environ.get("ONNXCOMP_MODELOPT_PYTHON", "/work/venv_modelopt/bin/python")


def modelopt_row(kind: str, source: Path, mode: str, reference_run, with_openvino: bool) -> dict:
    """ModelOpt's ONNX PTQ (its own venv, benchmarks/modelopt_quantize.py) on the same calibration
    feeds; its output through our tensorrt conformance check and the same metrics."""
    mode, _, method = mode.partition(":")  # e.g. int8:max (ModelOpt's calibration method; default its own)
    row = {"model": kind, "recipe": f"ModelOpt {mode}" + (f" ({method})" if method else ""), "target": "tensorrt"}
    with tempfile.TemporaryDirectory() as tmp:
        feeds = Path(tmp) / "feeds.npz"
        batches = zoo.get(kind).calibration_feeds()
        np.savez(feeds, **{f"{i}/{name}": array for i, feed in enumerate(batches) for name, array in feed.items()})
        out = Path(tmp) / "out.onnx"
        start = time.perf_counter()
        done = subprocess.run(
            [
                MODELOPT_PYTHON,
                str(HERE.parent / "modelopt_quantize.py"),
                str(source),
                str(feeds),
                str(out),
                "--mode",
                mode,
                *(["--method", method] if method else []),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {**row, "conformance": f"ModelOpt failed: {last[:300]}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        row["modelopt"] = json.loads(done.stdout.strip().splitlines()[-1])
        result = check_file(out, TENSORRT)
        row["conformance"] = "conforms" if result.ok else f"FAILS: {result.violations[0].describe()[:200]}"
        row["violations_total"] = len(result.violations)
        row["bytes"] = out.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("*.data"))
        if reference_run is None:  # --check-only
            return row
        ort_run = ort_runner(out)
        row["ort"] = metric(kind, reference_run, ort_run)
        print(json.dumps(row), file=sys.stderr, flush=True)  # before OpenVINO, which may refuse the file
        if with_openvino:
            try:
                ov_run = openvino_runner(out)
            except RuntimeError as exc:  # e.g. OpenVINO's "cannot be divided by block_size"
                lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith(("--", "Summary"))]
                row["openvino_error"] = "OpenVINO refused: " + (lines or ["?"])[-1][:300]
                return row
            row["openvino"] = metric(kind, reference_run, ov_run)
            row["ort_vs_openvino_cosine"] = runtime_agreement(kind, ort_run, ov_run)
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| model | recipe | target | conformance | accuracy, ORT CPU | accuracy, OpenVINO | ORT↔OV cosine | size "
        "| compress s | latency × fp32, ORT CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ort = headline(r["model"], r["ort"]) if "ort" in r else "—"
        ov = headline(r["model"], r["openvino"]) if "openvino" in r else r.get("openvino_error", "—")
        agree = f"{r['ort_vs_openvino_cosine']:.4f}" if "ort_vs_openvino_cosine" in r else "—"
        size = f"{r['bytes'] / 1e6:.2f} MB" if "bytes" in r else "—"
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else "—"
        latency = f"{r['latency_ratio']:.2f}" if "latency_ratio" in r else "—"
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['target']} | {r['conformance']} | {ort} | {ov} | {agree} | {size} "
            f"| {seconds} | {latency} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated presets, or all")
    parser.add_argument("--fp16", action="store_true", help="also the float16 variant (compress --fp16) per target")
    parser.add_argument(
        "--modelopt",
        default="",
        help="also ModelOpt's ONNX PTQ in these modes (e.g. int8,int8:max,int4), run with $ONNXCOMP_MODELOPT_PYTHON "
        "(default /work/venv_modelopt/bin/python; rows skipped with a message when it is absent)",
    )
    parser.add_argument(
        "--check-only", action="store_true", help="compress and check conformance only (no accuracy, no OpenVINO)"
    )
    parser.add_argument(
        "--latency-runs", type=int, default=20, help="interleaved timing rounds for ort-cpu rows (0: no latency)"
    )
    parser.add_argument("--out", help="write the Markdown table here too")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = parser.parse_args()
    if args.latency_runs < 0:
        parser.error(f"--latency-runs must be 0 or more, not {args.latency_runs}")
    with_openvino = openvino_available() and not args.check_only
    if not with_openvino and not args.check_only:
        print("openvino not installed (pip install onnxcomp[openvino]): OpenVINO columns left empty", file=sys.stderr)
    modes = [m for m in args.modelopt.split(",") if m]
    if modes and not Path(MODELOPT_PYTHON).exists():
        print(f"ModelOpt's venv not found ({MODELOPT_PYTHON}): ModelOpt rows skipped", file=sys.stderr)
        modes = []
    rows = []
    for kind in args.models.split(","):
        source = zoo.onnx_path(kind)
        reference_run = None if args.check_only else ort_runner(source)
        for mode in modes:
            rows.append(modelopt_row(kind, source, mode, reference_run, with_openvino))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        recipes = preset_names() if args.recipes == "all" else [r for r in args.recipes.split(",") if r]
        for recipe in recipes:  # --recipes "": ModelOpt rows only
            for target in args.targets.split(","):
                for fp16 in (False, True) if args.fp16 and target_named(target).fp16 else (False,):
                    row = run_row(
                        kind,
                        source,
                        recipe,
                        target,
                        reference_run,
                        with_openvino,
                        fp16,
                        check_only=args.check_only,
                        latency_runs=args.latency_runs,
                    )
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    text = json.dumps(rows, indent=1) if args.json else table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
