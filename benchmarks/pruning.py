"""Structured pruning side by side: onnxcomp's `prune` recipe vs Torch-Pruning, same ONNX Runtime.

    .venv/bin/python benchmarks/pruning.py --model digits                       # 10…50 %
    .venv/bin/python benchmarks/pruning.py --model digits_res --prune channels  # residual streams
    .venv/bin/python benchmarks/pruning.py --model minilm --sparsities 0.3 --out /tmp/minilm.md
    .venv/bin/python benchmarks/pruning.py --model smollm2 --sparsities 0.2 --methods ours

`--sparsities` are fractions of the *block* parameters removed (every initializer except
embedding tables read by a Gather and their transposed copies, e.g. a tied LM head); for the
digits CNNs every parameter counts. onnxcomp's `sparsity` option is a fraction of the *prunable*
groups' parameters, so it is set to s · block / prunable (above the maximum → a row with the
error). Methods:
- `ours`: `prune` recipe, FLAP importance (`--importance obs|wanda|magnitude` for another),
  sequential least-squares refit (`damp` per model); `--options '{"head_sparsity": 0.0833}'`
  passes more prune_structured options to every ours* row;
- `ours-oneshot`: the same with the refit on the unpruned model's statistics only;
- `ours-norecovery`: the same channels, sliced only (`recovery: none`);
- `magnitude`: L2 magnitude importance, no recovery;
- `torch-pruning`: `torch_pruning.pruner.MetaPruner` with `MagnitudeImportance(p=2)` on the
  PyTorch model, the same kinds of channels (CNN: conv filters + the hidden Linear; transformers:
  the MLP's first layer(s) only, the others ignored), a uniform ratio giving the same block
  parameter reduction, no fine-tuning; exported with the zoo's exporter.
Every candidate is scored against the fp32 model by the zoo metric (`models.<kind>.compare`) and
timed with `onnxcomp.runtime.measure_latency`, interleaved with fp32 (ratio = candidate / fp32;
`--latency-repeats N` times, the median reported and all N listed; SmolLM2 also at sequence 1).
Torch-Pruning is needed only for its rows: `pip install torch-pruning` into the venv. With `--out`,
the table, its JSON and a plot of the metric against sparsity per method (PNG, needs matplotlib:
the `report` extra) are written side by side.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

import onnxcomp
from onnxcomp import models
from onnxcomp.ir.graph import input_specs
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.passes.recipes import load_recipe
from onnxcomp.pruning.groups import find_groups
from onnxcomp.pruning.params import ParamCounter
from onnxcomp.runtime import measure_latency, ort_session, runner, synthetic_feed
from onnxcomp.tools.export import export_module

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

SETTINGS = {  # calibration feeds, refit damping, latency (batch, sequence, runs)
    "digits": {"calib": lambda m: m.calibration_feeds(1024), "damp": 0.1, "latency": (64, 1, 200)},
    "digits_res": {"calib": lambda m: m.calibration_feeds(1024), "damp": 0.1, "latency": (64, 1, 200)},
    "minilm": {"calib": lambda m: m.calibration_feeds(1024), "damp": 0.01, "latency": (1, 128, 30)},
    "smollm2": {"calib": lambda m: m.calibration_feeds(16), "damp": 0.01, "latency": (1, 256, 8), "decode": 30},
}  # "decode": also timed at sequence 1 (one token, no KV cache), that many rounds
FFN_FIRST = ("intermediate.dense", "gate_proj", "up_proj")


def canonical(path) -> ir.Model:
    model = ir.load(str(path))
    for name, opts in load_recipe("canonicalize"):
        PASSES[name](Context(), **opts)(model)
    return model


def block_params(model: ir.Model) -> int:
    """Parameters outside embedding tables (Gather data) and their transposed copies."""
    tables = {n.inputs[0] for n in model.graph if n.op_type == "Gather" and n.inputs[0].const_value is not None}
    shapes = {tuple(t.shape) for t in tables if t.shape is not None and len(t.shape) == 2}
    total = 0
    for value in model.graph.initializers.values():
        dims = tuple(value.shape)
        if value in tables or (len(dims) == 2 and dims[::-1] in shapes):
            continue
        total += int(np.prod(dims, dtype=np.int64))
    return total


def prunable_params(model: ir.Model, kinds: str, kv_groups: bool = False) -> int:
    groups = find_groups(model, kv_groups=kv_groups)
    return ParamCounter([g for g in groups if not g.reason and g.kind in kinds.split(",")]).total


def filters(path) -> int:
    return sum(int(i.dims[0]) for i in onnx.load(str(path)).graph.initializer if len(i.dims) == 4)


def ours(kind, path, feeds, out, sparsity, importance, recovery, damp, extra) -> dict:
    options = {
        "prune_structured": {
            "sparsity": sparsity,
            "importance": importance,
            "recovery": recovery,
            "damp": damp,
            "multiple": 1,  # exact fractions of the filters (the preset keeps Conv filters in blocks of 16)
            **extra,
        }
    }
    start = time.perf_counter()
    result = onnxcomp.compress(path, "prune", feeds, output=out, options=options, use_cache=False)
    entry = next(e for e in result.report["passes"] if e["pass"] == "prune_structured")
    return {"seconds": round(time.perf_counter() - start, 1), "groups": entry["details"]["groups"]}


def _tp_prune(kind, ratio):
    import torch
    import torch_pruning as tp

    module = models.get(kind)
    net, inputs, axes = module.load_for_export()
    if kind == "digits":
        ignored = [net.layers[-1]]
    elif kind == "digits_res":
        ignored = [net.fc]
    else:
        ignored = [m for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith(FFN_FIRST)]
        ignored += [m for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    before = sum(p.numel() for p in net.parameters())
    pruner = tp.pruner.MetaPruner(
        net, inputs, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio, ignored_layers=ignored
    )
    pruner.step()
    return net, inputs, axes, before - sum(p.numel() for p in net.parameters())


def torch_pruning(kind, block, ffn_params, target, out) -> dict:
    """Magnitude pruning with Torch-Pruning at a uniform ratio removing `target` parameters: for
    the transformers (MLP only) the ratio is target / MLP parameters; for the CNN (both sides of
    a layer shrink) it is bisected."""
    start = time.perf_counter()
    if kind.startswith("digits"):
        low, high = 0.0, 0.95
        for _ in range(12):
            mid = (low + high) / 2
            low, high = (mid, high) if _tp_prune(kind, mid)[3] < target else (low, mid)
        ratio = high
    else:
        ratio = min(target / ffn_params, 0.95)
    net, inputs, axes, removed = _tp_prune(kind, ratio)
    seconds = time.perf_counter() - start
    export_module(net, inputs, out, axes, output_names=list(models.get(kind).OUTPUTS))
    return {
        "seconds": round(seconds, 1),
        "tp_ratio": round(ratio, 4),  # not "ratio": SmolLM2's metric (perplexity ratio) uses that key
        "tp_removed_block_fraction": round(removed / block, 4),
    }


METRICS = {  # the zoo metric's key plotted per model
    "digits": ("accuracy", "accuracy"),
    "digits_res": ("accuracy", "accuracy"),
    "minilm": ("mean_cosine", "mean cosine vs fp32"),
    "smollm2": ("ratio", "perplexity / fp32"),
}


def plot(kind: str, rows: list[dict], path: Path) -> None:
    """Accuracy vs block sparsity, one line per method (and `prune` variant), as a PNG at `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'onnxcomp[report]')", file=sys.stderr)
        return
    key, label = METRICS[kind]
    lines: dict[str, list] = {}
    for row in rows:
        if key in row:
            name = row["method"] + (f" ({row['prune']})" if "prune" in row else "")
            lines.setdefault(name, []).append((row.get("removed_block_fraction", row["sparsity_block"]), row[key]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in lines.items():
        xs, ys = zip(*sorted(points))
        ax.plot([100 * x for x in xs], ys, marker="o", label=name)
    ax.set(xlabel="block parameters removed (%)", ylabel=label, title=f"{kind}: structured pruning, no fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--sparsities", default="0.1,0.2,0.3,0.4,0.5")
    parser.add_argument("--methods", default="ours,ours-oneshot,ours-norecovery,magnitude,torch-pruning")
    parser.add_argument("--prune", default="ffn,channels", help="What onnxcomp prunes ('a;b': each, same run).")
    parser.add_argument("--allocation", default="uniform", choices=["global", "uniform"])
    parser.add_argument("--importance", default="flap", help="onnxcomp's importance for the ours* rows.")
    parser.add_argument(
        "--options", default="{}", help="More prune_structured options, JSON: '{\"head_sparsity\": 0.08}'."
    )
    parser.add_argument("--latency-repeats", type=int, default=1, help="Interleaved timings per row (ratios listed).")
    parser.add_argument("--out", type=Path, help="Markdown table here (and .json beside it).")
    parser.add_argument("--keep", action="store_true", help="Keep the pruned models (default: removed at the end).")
    args = parser.parse_args()
    kind, settings = args.model, SETTINGS[args.model]
    module = models.get(kind)
    path = models.onnx_path(kind)
    base = canonical(path)
    variants = args.prune.split(";")
    kv_groups = bool(json.loads(args.options).get("kv_groups", False))  # K/V columns become prunable
    block, prunables = block_params(base), {v: prunable_params(base, v, kv_groups) for v in variants}
    ffn = prunable_params(base, "ffn")
    del base
    feeds = settings["calib"](module)
    batch, sequence, runs = settings["latency"]
    fp32 = ort_session(str(path), spinning=False)
    specs = input_specs(onnx.load(str(path), load_external_data=False))
    feed, decode_feed = synthetic_feed(specs, batch, sequence), synthetic_feed(specs, 1, 1)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="onnxcomp-prune-"))
    print(f"{kind}: block parameters {block}, prunable (onnxcomp groups) {prunables}", file=sys.stderr)
    runs_of = [(m, v) for m in args.methods.split(",") for v in (variants if m != "torch-pruning" else variants[:1])]
    try:
        for s in [float(x) for x in args.sparsities.split(",")]:
            for method, variant in runs_of:
                out = tmp / f"{method}-{s}-{variants.index(variant)}.onnx"
                row = {"model": kind, "sparsity_block": s, "method": method}
                prunable, extra = (
                    prunables[variant],
                    {"prune": variant, "allocation": args.allocation, **json.loads(args.options)},
                )
                extra["sequential"] = method == "ours"
                if method != "torch-pruning":
                    row.update(extra)
                try:
                    if method == "torch-pruning":
                        row.update(torch_pruning(kind, block, ffn, s * block, out))
                    else:
                        importance = "magnitude" if method == "magnitude" else args.importance
                        row["importance"] = importance
                        recovery = "refit" if method in ("ours", "ours-oneshot") else "none"
                        option = s * block / prunable
                        row["sparsity_option"] = round(option, 4)
                        damp = settings["damp"]
                        row.update(ours(kind, str(path), feeds, str(out), option, importance, recovery, damp, extra))
                        row.pop("groups")
                    pruned = canonical(out)
                    row["removed_block_fraction"] = round(1 - block_params(pruned) / block, 4)
                    del pruned
                    if kind.startswith("digits"):
                        row["filters_removed"] = round(1 - filters(out) / filters(path), 4)
                    cand = ort_session(str(out), spinning=False)
                    row.update(module.compare(runner(fp32), runner(cand)))
                    ratios, ms = [], []
                    for _ in range(args.latency_repeats):
                        times = measure_latency({"fp32": fp32, "cand": cand}, feed, runs=runs)
                        ratios.append(round(times["cand"]["median_ms"] / times["fp32"]["median_ms"], 3))
                        ms.append(times["cand"]["median_ms"])
                    row["latency_ratio"] = float(np.median(ratios))
                    if len(ratios) > 1:
                        row["latency_ratios"] = ratios
                    row["latency_ms"] = round(float(np.median(ms)), 2)
                    if "decode" in settings:
                        times = measure_latency({"fp32": fp32, "cand": cand}, decode_feed, runs=settings["decode"])
                        row["latency_ratio_seq1"] = round(times["cand"]["median_ms"] / times["fp32"]["median_ms"], 3)
                except Exception as exc:  # a failed configuration is a row with its error
                    row["error"] = str(exc).splitlines()[0][:200]
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        if args.keep:
            print(f"pruned models kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        plot(kind, rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
