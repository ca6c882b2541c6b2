"""Why `onnxruntime.quantization.quantize_static` collapses on MiniLM-L6: the ablation behind
benchmarks/README.md.

    .venv/bin/python benchmarks/ort_collapse.py [--out /tmp/ort_collapse.md]   # ~6 min on 2 cores

1. Ranges of the float tensors ORT calibrates, on the 128 calibration sentences (fp32 model).
2. quantize_static (QDQ, per_channel=True, uint8 activations, after quant_pre_process) under a
   series of configurations; each model is scored twice: in an optimized session (ORT fuses
   the Q/DQ pairs into integer kernels) and with graph optimizations disabled (Q/DQ executed
   as float arithmetic: the model's intended numerics, with no integer-kernel effect).
"""

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

import int8_minilm as bench  # noqa: E402  (the benchmark's helpers: padding, profiles, output)


def mask_nodes(proto, with_softmax: bool) -> list[str]:
    """The Where that builds the additive attention mask, the Adds that add it, their Softmaxes."""
    where = [n for n in proto.graph.node if n.op_type == "Where"]
    mask_out = {o for n in where for o in n.output}
    adds = [n for n in proto.graph.node if n.op_type == "Add" and any(i in mask_out for i in n.input)]
    add_out = {o for n in adds for o in n.output}
    soft = [n for n in proto.graph.node if n.op_type == "Softmax" and n.input[0] in add_out] if with_softmax else []
    return sorted(n.name for n in where + adds + soft)


def float_residuals(path: str) -> None:
    """Rewire every non-MatMul consumer of a dequantized activation (the residual Adds) to the
    float tensor, as onnxcomp does; the MatMuls keep their Q/DQ input. Rewrites `path` in place."""
    import onnx

    proto = onnx.load(path)
    init = {i.name for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    source = {}
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in init and n.input[0] in producer:
            source[n.output[0]] = producer[n.input[0]].input[0]
    for n in proto.graph.node:
        if n.op_type not in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            for k, name in enumerate(n.input):
                if name in source:
                    n.input[k] = source[name]
    onnx.save(proto, path)


def tensor_ranges(pre_path: str, feeds: list[dict], top: int) -> list[dict]:
    import numpy as np
    import onnx
    import onnxruntime as ort

    proto = onnx.load(pre_path)
    floats = {v.name for v in proto.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producer = {o: n for n in proto.graph.node for o in n.output}
    names = [o for n in proto.graph.node for o in n.output if o in floats]
    for name in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    p9999 = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            lo[name] = min(lo[name], float(value.min()))
            hi[name] = max(hi[name], float(value.max()))
            p9999[name] = max(p9999[name], float(np.percentile(np.abs(value), 99.99)))
    order = sorted(names, key=lambda n: -max(abs(lo[n]), abs(hi[n])))
    return [
        {"tensor": n, "producer": producer[n].op_type, "min": lo[n], "max": hi[n], "p99.99_abs": p9999[n]}
        for n in order[:top]
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "onnxcomp-bench" / "ort_collapse.md")
    p.add_argument("--top", type=int, default=12, help="rows of the tensor-range table")
    args = p.parse_args()
    args.out = args.out.resolve()  # the run changes into a scratch folder
    os.environ.setdefault("ONNXCOMP_CACHE", str(bench.REPO / ".cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import logging

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnxcomp
    import onnxcomp.models as zoo
    from onnxcomp.runtime import ort_session, runner

    logging.disable(logging.WARNING)
    module = zoo.get("minilm")
    src = str(zoo.onnx_path("minilm"))
    feeds = module.calibration_feeds(128)
    padded = bench.pad_feeds(feeds, module.tokenizer().pad_token_id)
    evaluation = module.evaluation_feeds()
    work = Path(tempfile.mkdtemp(prefix="ort_collapse."))
    os.chdir(work)  # onnxruntime.quantization writes external-data files into the cwd
    pre = str(work / "pre.onnx")
    bench.ort_preprocess(src, pre)
    pre_proto = onnx.load(pre)
    reference = runner(ort_session(src))
    cache = {}

    def reference_run(feed):
        if id(feed) not in cache:
            cache[id(feed)] = reference(feed)
        return cache[id(feed)]

    def unoptimized(path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 2
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    act_mm = bench.activation_matmuls(pre_proto)
    no_out = {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
    configs = [
        ("defaults (all op types ORT quantizes)", False, "MinMax", {}),
        ("exclude Where + the 6 mask Adds", False, "MinMax", {"nodes_to_exclude": mask_nodes(pre_proto, False)}),
        (
            "exclude Where + mask Adds + their Softmaxes",
            False,
            "MinMax",
            {"nodes_to_exclude": mask_nodes(pre_proto, True)},
        ),
        ("op_types_to_quantize=[MatMul]", False, "MinMax", {"op_types_to_quantize": ["MatMul"]}),
        (
            "[MatMul], activation×activation MatMuls excluded",
            False,
            "MinMax",
            {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": act_mm},
        ),
        (
            "[MatMul], no Q/DQ on MatMul outputs",
            False,
            "MinMax",
            {"op_types_to_quantize": ["MatMul"], "extra_options": no_out},
        ),
        (
            "[MatMul], both of the above",
            False,
            "MinMax",
            {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": act_mm, "extra_options": no_out},
        ),
        (
            "both of the above, residual Adds rewired to the float tensor",
            False,
            "MinMax",
            {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": act_mm, "extra_options": no_out},
            float_residuals,
        ),
        ("defaults", False, "Percentile", {}),
        ("defaults", True, "Percentile", {}),
        ("defaults", True, "Entropy", {}),
        (
            "[MatMul], both of the above",
            True,
            "Entropy",
            {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": act_mm, "extra_options": no_out},
        ),
    ]
    results = []
    for i, (label, pad, method, kwargs, *post) in enumerate(configs):
        data = padded if pad else feeds

        out = str(work / f"c{i}.onnx")
        row = {"config": label, "feeds": "padded to 128" if pad else "same as benchmark", "method": method}
        start = time.perf_counter()
        try:
            quantize_static(
                pre,
                out,
                bench.ort_reader(data),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
                **kwargs,
            )
            for rewrite in post:
                rewrite(out)
            row["opt"] = module.compare(reference_run, runner(ort_session(out)), evaluation)
            row["noopt"] = module.compare(reference_run, runner(unoptimized(out)), evaluation)
            row["profile"] = bench.qdq_profile(out, top=1)
        except Exception as exc:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)[-3:]]
            row["error"] = bench.one_line(exc)[:200] + f" (at {' ← '.join(reversed(frames))})"
        row["seconds"] = time.perf_counter() - start
        results.append(row)
        print(
            f"{label} [{method}, {row['feeds']}]: "
            + (
                row.get("error")
                or f"cosine {row['opt']['mean_cosine']:.4f} / unoptimized {row['noopt']['mean_cosine']:.4f}"
            ),
            file=sys.stderr,
            flush=True,
        )

    ours = onnxcomp.compress(
        src, "int8", calibration=feeds, options={"quantize_qdq": {"method": "minmax"}}, use_cache=False
    )
    ours_path = str(work / "ours.onnx")
    ours.save(ours_path)
    ours_row = {
        "opt": module.compare(reference_run, runner(ort_session(ours_path)), evaluation),
        "noopt": module.compare(reference_run, runner(unoptimized(ours_path)), evaluation),
        "profile": bench.qdq_profile(ours_path, top=1),
    }
    ranges = tensor_ranges(pre, feeds, args.top)
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## Why ORT quantize_static collapses on MiniLM-L6 (ablation)",
        "",
        f"Command: `{shlex.join(getattr(sys, 'orig_argv', sys.argv))}` · onnxruntime {ort.__version__}",
        "",
        "quantize_static: QDQ, per_channel=True, QUInt8 activations, QInt8 weights, after "
        "quant_pre_process(auto_merge=True). "
        'Cosine = mean cosine of mean-pooled embeddings vs fp32 on 256 held-out sentences; "unoptimized" runs the same '
        "file with graph optimizations off, so Q/DQ are evaluated in float and no integer kernel is involved.",
        "",
        "| configuration | method | calibration feeds | mean cosine | NN agree | cosine, unoptimized | "
        "activations quantized | largest activation scale | error |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]

    def line(label, method, feeds_label, row):
        if row.get("error"):
            return f"| {label} | {method} | {feeds_label} | — | — | — | — | — | {bench.cell(row['error'])} |"
        prof = row["profile"]
        big = prof["largest_activation_scales"][0] if prof["largest_activation_scales"] else None
        big_text = f"{big['scale']:.3g} (`{big['tensor']}`, {big['producer']})" if big else "—"
        return (
            f"| {label} | {method} | {feeds_label} | {row['opt']['mean_cosine']:.4f} | "
            f"{row['opt']['nn_agreement']:.3f} | "
            f"{row['noopt']['mean_cosine']:.4f} | {prof['quantized_activation_tensors']} | {big_text} | |"
        )

    for row in results:
        lines.append(line(row["config"], row["method"], row["feeds"], row))
    lines.append(line("onnxcomp int8 recipe (reference)", "minmax", "same as benchmark", ours_row))
    lines += [
        "",
        "Largest float tensors on the 128 calibration sentences (fp32 model; p99.99 = largest per-batch 99.99th "
        "percentile of |x|):",
        "",
        "| tensor | producer | min | max | p99.99 of abs |",
        "|---|---|---:|---:|---:|",
    ]
    for r in ranges:
        lines.append(f"| `{r['tensor']}` | {r['producer']} | {r['min']:.4g} | {r['max']:.4g} | {r['p99.99_abs']:.4g} |")
    text = "\n".join(lines) + "\n"
    bench.write_atomic(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
