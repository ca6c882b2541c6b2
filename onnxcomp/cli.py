"""The `onnxcomp` command line: export, compress, inspect, eval, demo, recipes."""

import json
import os
import signal
import sys
from pathlib import Path

import click

from onnxcomp import models, progress
from onnxcomp.api import compress as run_compress
from onnxcomp.api import output_name_for, speed_guard_default
from onnxcomp.calibration.collectors import METHODS
from onnxcomp.custom_ops.build import BuildError, build_library
from onnxcomp.emit.conformance import check_file, target_summary
from onnxcomp.emit.targets import DEFAULT_TARGET, TARGETS, target_named
from onnxcomp.emit.tensorrt_engine import build_engine, load_checked, parse_shapes, trtexec_command
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.modelio import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, check_output_path, model_opset, write_bytes_atomic
from onnxcomp.passes import PASSES
from onnxcomp.passes.guard_speed import parse_timing_shapes
from onnxcomp.passes.plan_precision import parse_size_budget
from onnxcomp.passes.recipes import PRESETS, load_recipe, preset_names, recipe_inline_input_initializers, recipe_target
from onnxcomp.tools import html_report
from onnxcomp.tools.demo import run_demo
from onnxcomp.tools.evaluate import evaluate, summary_rows
from onnxcomp.tools.export import export_entry, export_module, upgrade_file
from onnxcomp.tools.inspect_model import inspect


def _emit(as_json: bool, payload: dict, text: str) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else text)


def _table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _json_option(func):
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout (no progress bars)."
    )(func)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxcompError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:  # a bad option value: the same one line as any bad input
            where = f" (see onnxcomp {exc.ctx.info_name} --help)" if exc.ctx is not None and exc.ctx.parent else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort):  # --help, --version: click's own exits
            raise
        except KeyboardInterrupt:  # outputs are written by rename: nothing half-written is left
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug of ours: still one line (status 1); ONNXCOMP_DEBUG=1 shows where
            if os.environ.get("ONNXCOMP_DEBUG"):
                raise
            text = str(exc).strip()
            click.echo(
                f"error: internal error, please report it: {type(exc).__name__}"
                + (f": {text.splitlines()[0]}" if text else "")
                + " (ONNXCOMP_DEBUG=1 prints the traceback)",
                err=True,
            )
            sys.exit(1)


def _terminate(signum, frame):
    click.echo("error: terminated", err=True)
    raise SystemExit(128 + signum)  # unwinds like an exception: temporary files are removed


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxcomp")
def cli():
    """Compress ONNX models for deployment.

    \b
    Typical flow:
      onnxcomp export minilm -o minilm.onnx            # or module:function, or an .onnx file
      onnxcomp compress minilm.onnx -o minilm.int8.onnx --recipe int8 --model-kind minilm
      onnxcomp eval minilm.onnx minilm.int8.onnx --model-kind minilm
      onnxcomp inspect minilm.int8.onnx

    Every command takes --json for scripts and exits non-zero with one `error:` line on bad input.
    """


@cli.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option(
    "--opset",
    type=click.IntRange(MIN_OPSET, MAX_OPSET),
    help=f"Target ONNX opset (≥ 21 for int4 and blocked scales).  [default: at least {DEFAULT_OPSET}]",
)
@_json_option
def export(source, output, opset, as_json):
    """Export SOURCE to ONNX with dynamic batch/sequence axes.

    \b
    SOURCE is one of:
      a zoo model name      minilm, digits, smollm2
      module:function       returns (torch model, {input name: example tensor}[, dynamic axes])
      an existing .onnx     checked and converted to --opset
    """
    progress.set_enabled(not as_json)
    if source.endswith(".onnx") or Path(source).is_file():
        proto = upgrade_file(source, output, opset)
    elif source in models.KINDS:
        zoo = models.get(source)
        model, inputs, axes = zoo.load_for_export()
        proto = export_module(model, inputs, output, axes, opset, output_names=list(zoo.OUTPUTS))
    elif ":" in source:
        proto = export_entry(source, output, opset)
    else:
        raise OnnxcompError(f"{source}: not a file, a zoo model ({', '.join(models.KINDS)}) or module:function")
    payload = {
        "output": output,
        "opset": model_opset(proto),  # what was written, not what was asked
        "nodes": len(proto.graph.node),
        "bytes": Path(output).stat().st_size,
        "inputs": [i.name for i in proto.graph.input],
        "outputs": [o.name for o in proto.graph.output],
    }
    _emit(
        as_json, payload, f"wrote {output}: opset {payload['opset']}, {payload['nodes']} nodes, {_mb(payload['bytes'])}"
    )


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Compressed ONNX file to write.  [default: MODEL.<recipe>.onnx beside MODEL]",
)
@click.option(
    "--recipe",
    default="int8",
    show_default=True,
    help="Preset (int8, w8a8-smoothquant, …; `onnxcomp recipes` lists them) or a .toml/.yaml recipe file.",
)
@click.option(
    "--calib",
    "calib",
    help="Calibration data: folder of .npz (keys = input names), .txt file "
    "(needs --model-kind for the tokenizer), folder of images, or module:function.",
)
@click.option(
    "--model-kind",
    help="Zoo model kind (minilm, digits, smollm2): gives the tokenizer, and built-in calibration data "
    "if --calib is absent.",
)
@click.option(
    "--calib-method", type=click.Choice(METHODS), help="How activation ranges are chosen. [recipe default: percentile]"
)
@click.option(
    "--activation-dtype", type=click.Choice(["uint8", "int8"]), help="uint8 asymmetric or int8 symmetric activations."
)
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128"]),
    help="Weight-only recipes (w4a16-*, w8a16): input rows per quantization block. [recipe default: 128]",
)
@click.option(
    "--asymmetric",
    is_flag=True,
    help="Weight-only recipes: a zero point per block (more accurate; TensorRT wants symmetric).",
)
@click.option(
    "--alpha",
    help="SmoothQuant migration strength: a number in [0, 1], or 'auto' (searched per layer group). "
    "[recipe default: auto]",
)
@click.option(
    "--size-budget",
    help="Mixed-precision recipes (w4a16-mixed): the output file size, as a fraction of the input (0.19x) or in "
    "bytes (120MB). [recipe default: uniform = the size of the uniform int4 g128 preset]",
)
@click.option(
    "--max-error",
    type=float,
    help="Mixed-precision recipes: instead of a size, the largest predicted output error (mean KL in nats for "
    "logits, else relative squared L2); the smallest model within it is chosen.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Mixed-precision recipes: measure the layers' sensitivity on N local processes.  [default: 1]",
)
@click.option(
    "--ray",
    "ray_address",
    help="Mixed-precision recipes: measure the layers' sensitivity on the Ray cluster whose head is at HOST:PORT "
    "(pip install 'onnxcomp[distributed]'); --workers sets the number of actors.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when the written model misses its size or latency budget (it is written anyway).",
)
@click.option(
    "--latency-budget",
    help="The speed guard's bound on the output's latency, as a fraction of the input's on this machine "
    "(0.7x); quantized layers that make it slower go back to float.  [default: 1.0x, never slower]",
)
@click.option(
    "--shapes",
    help="Input shapes the speed guard times at, e.g. input_ids:1x128,attention_mask:1x128. "
    "[default: one row of the first calibration sample, else batch 1, sequence 128]",
)
@click.option(
    "--no-speed-guard",
    is_flag=True,
    help="Skip the speed guard: the output does not depend on this machine's timing (also ONNXCOMP_SPEED_GUARD=0).",
)
@click.option(
    "--sparsity",
    type=float,
    help="Pruning recipes (prune, prune-w4a16, prune-int8): fraction in [0, 1) of the prunable "
    "parameters to remove. [recipe default: 0.2]",
)
@click.option("--prune", "prune_kinds", help="Pruning recipes: what to prune, e.g. 'ffn,channels'.")
@click.option(
    "--importance",
    type=click.Choice(["flap", "wanda", "magnitude", "obs"]),
    help="Pruning recipes: channel importance. [recipe default: flap]",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Keep nodes in float: an op type (Softmax) or a node-name glob ('*attention*'). Repeatable.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Run original and current model in ONNX Runtime after every pass; record the deviation.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Write the report here: JSON, or one self-contained HTML page with plots when the name ends in .html.",
)
@click.option(
    "--opset",
    type=click.IntRange(MIN_OPSET, MAX_OPSET),
    help=f"Convert the input to this opset first (never down).  [default: at least {DEFAULT_OPSET}]",
)
@click.option("--no-cache", is_flag=True, help="Recompute calibration statistics even if cached.")
@click.option(
    "--inline-input-initializers",
    "inline_inputs",
    is_flag=True,
    help="Treat initializers that are also graph inputs (older exports) as constants and compress them. "
    "[default: they stay overridable inputs, left in float and listed in the report]",
)
@click.option(
    "--target",
    help=f"Runtime the output is for: {', '.join(TARGETS)} (`onnxcomp targets`). "
    "[default: the recipe file's target, else ort-cpu]",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="The strongly typed float16 variant: float tensors, weights and QDQ scales in float16, Casts at the "
    "inputs/outputs baked in (targets ort-cuda, tensorrt, portable).",
)
@_json_option
def compress(
    model,
    output,
    recipe,
    calib,
    model_kind,
    calib_method,
    activation_dtype,
    group_size,
    asymmetric,
    alpha,
    size_budget,
    max_error,
    workers,
    ray_address,
    strict,
    latency_budget,
    shapes,
    no_speed_guard,
    sparsity,
    prune_kinds,
    importance,
    exclude,
    verify,
    report_path,
    opset,
    no_cache,
    inline_inputs,
    target,
    fp16,
    as_json,
):
    """Compress MODEL with a recipe (default: int8 QDQ) and write OUTPUT.

    \b
    Examples:
      onnxcomp compress bert.onnx --calib calib_npz/            # writes bert.int8.onnx
      onnxcomp compress minilm.onnx --model-kind minilm --calib-method mse --verify
      onnxcomp compress smollm2.onnx --model-kind smollm2 --recipe w8a8-smoothquant --alpha 0.6
      onnxcomp compress smollm2.onnx --model-kind smollm2 --recipe w4a16-awq --asymmetric --group-size 64
      onnxcomp compress model.onnx -o small.onnx --recipe my_recipe.toml --json

    The input is never modified; OUTPUT appears only when everything succeeded. Identical
    inputs give byte-identical output.
    """
    progress.set_enabled(not as_json)
    output = output or str(output_name_for(model, Path(recipe).stem))
    steps = load_recipe(recipe)  # read once; the API takes the resolved list
    target = target_named(target or recipe_target(recipe)).name  # an unknown target: refused before any work
    if report_path:
        check_output_path(report_path, model)
    tokenizer, calibration = None, calib
    if model_kind:
        tokenizer = models.tokenizer(model_kind)
        if calib is None:
            calibration = models.get(model_kind).calibration_feeds()
    overrides = {}
    qdq = {
        k: v
        for k, v in {
            "method": calib_method,
            "activation_dtype": activation_dtype,
            "exclude": list(exclude) or None,
        }.items()
        if v is not None
    }
    if qdq:
        overrides["quantize_qdq"] = qdq
    if alpha is not None:
        overrides["smoothquant"] = {"alpha": _alpha_value(alpha)}
    weight_only = {
        k: v
        for k, v in {
            "group_size": int(group_size) if group_size else None,
            "symmetric": False if asymmetric else None,
        }.items()
        if v is not None
    }
    if weight_only:
        overrides.update(_weight_only_overrides(steps, recipe, weight_only))
    guard_on = not no_speed_guard and speed_guard_default()
    if (latency_budget is not None or shapes is not None) and not guard_on:
        raise OnnxcompError(
            "--latency-budget/--shapes set the speed guard, which --no-speed-guard (or ONNXCOMP_SPEED_GUARD=0) "
            "turns off"
        )
    guard_options = {
        **({"latency_budget": latency_budget} if latency_budget is not None else {}),  # checked by the pass
        **({"shapes": parse_timing_shapes(shapes)} if shapes is not None else {}),
    }
    if guard_options:
        overrides["guard_speed"] = guard_options
    planned = "plan_precision" in {name for name, _ in steps}
    if (size_budget is not None or max_error is not None or workers or ray_address) and not planned:
        raise OnnxcompError(
            f"--size-budget/--max-error/--workers/--ray apply to mixed-precision recipes (w4a16-mixed), not {recipe!r}"
        )
    if strict and not planned and not guard_on:
        raise OnnxcompError(
            f"--strict checks a size budget (mixed-precision recipes) or the speed guard's latency budget; recipe "
            f"{recipe!r} has no size budget and the speed guard is off"
        )
    if planned:
        if size_budget is not None and max_error is not None:
            raise OnnxcompError("give --size-budget or --max-error, not both")
        parse_size_budget(size_budget if size_budget is not None else "uniform")
        plan_options = {
            **({"size_budget": size_budget} if size_budget else {}),
            **({"max_error": max_error} if max_error is not None else {}),
            **({"workers": workers} if workers else {}),
            **({"ray": ray_address} if ray_address else {}),
        }
        if plan_options:
            overrides["plan_precision"] = plan_options
    pruning = {
        k: v for k, v in {"sparsity": sparsity, "prune": prune_kinds, "importance": importance}.items() if v is not None
    }
    if pruning:
        if "prune_structured" not in {name for name, _ in steps}:
            raise OnnxcompError(f"--sparsity/--prune/--importance apply to pruning recipes; recipe {recipe!r} has none")
        overrides["prune_structured"] = pruning
    result = run_compress(
        model,
        steps,
        calibration,
        output=output,
        options=overrides,
        verify=verify,
        opset=opset,
        tokenizer=tokenizer,
        use_cache=not no_cache,
        target=target,
        speed_guard=guard_on,
        inline_input_initializers=inline_inputs or recipe_inline_input_initializers(recipe),
        fp16=fp16,
    )
    report = result.report
    if report_path and Path(report_path).suffix.lower() in (".html", ".htm"):
        write_bytes_atomic(report_path, html_report.render(report).encode())
    elif report_path:
        write_bytes_atomic(report_path, json.dumps(report, indent=2, default=str).encode())
    rows = []
    for entry in report["passes"]:
        dev = entry.get("deviation")
        rows.append(
            (
                entry["pass"],
                f"{entry['seconds']:.2f}",
                f"{entry['nodes_before']}→{entry['nodes_after']}",
                f"{_mb(entry['bytes_before'])}→{_mb(entry['bytes_after'])}",
                f"{dev['cosine']:.5f} / {dev['max_abs']:.3g}" if dev else "-",
            )
        )
    text = _table(rows, ("pass", "seconds", "nodes", "weights", "cosine / max|err| vs input"))
    for entry in report["passes"]:
        line = PASSES[entry["pass"]].summary(entry.get("details", {}))
        if line:
            text += "\n\n" + line
    text += f"\n\ntarget {report['target']}: conforms ({report['conformance']['nodes_checked']} nodes checked)"
    text += (
        f"\n\nwrote {output}: {_mb(report['input_bytes'])} → {_mb(report['output_bytes'])} "
        f"({report['output_bytes'] / report['input_bytes']:.2f}x) in {report['seconds']:.1f} s"
    )
    overridable = report.get("input_initializers")
    if overridable and overridable["treated_as"] == "inputs":
        text += (
            f"\nnote: {len(overridable['names'])} initializers are also graph inputs (overridable), left as they were; "
            "--inline-input-initializers compresses them as constants"
        )
    if "final_error" in report:
        final = report["final_error"]
        text += f"\nmeasured output error of the written model: {final['value']:.4g} ({final['metric']})"
    budget = report.get("size_budget")
    if budget:
        over = budget["output_bytes"] / budget["bytes"] - 1
        text += f"\nsize budget {_mb(budget['bytes'])}: " + ("met" if budget["met"] else f"missed by {over:.1%}")
    latency = report.get("latency_budget")
    _emit(as_json, report, text)
    if budget and not budget["met"]:
        click.echo(f"warning: {output} is {over:.1%} over its size budget", err=True)
    if latency and not latency["met"]:
        click.echo(
            f"warning: {output} measured {latency['measured']:.2f}x the input's latency, over its budget of "
            f"{latency['ratio']:.2f}x",
            err=True,
        )
    if strict and ((budget and not budget["met"]) or (latency and not latency["met"])):
        sys.exit(1)


def _weight_only_overrides(steps: list, recipe: str, options: dict) -> dict:
    """The same options for every pass of the recipe that takes them (the weight-only passes: AWQ +
    GPTQ recipes have two)."""

    def weight_only_passes(passes) -> list[str]:
        return sorted({name for name, _ in passes if set(options) <= set(PASSES[name].options)})

    names = weight_only_passes(steps)
    if not names:
        presets = ", ".join(p for p, passes in PRESETS.items() if weight_only_passes(passes))
        raise OnnxcompError(
            f"--group-size/--asymmetric apply to weight-only recipes ({presets}); "
            f"recipe {recipe!r} has no weight-only pass"
        )
    return {name: dict(options) for name in names}


def _alpha_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise OnnxcompError(f"--alpha must be a number in [0, 1] or 'auto', not {text!r}") from None


@cli.command("check")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default=DEFAULT_TARGET, show_default=True, help=f"One of {', '.join(TARGETS)}.")
@_json_option
def check_command(model, target, as_json):
    """Check MODEL against a target's rules (ops per domain, quantized dtypes, zero points, blocks,
    opset) and the ONNX checker (full check). Exit 1 naming the first offending node."""
    result = check_file(model, target_named(target))
    payload = result.as_dict()
    if result.ok:
        text = f"{model}: conforms to target {target} ({result.nodes_checked} nodes checked, onnx.checker full check)"
    else:
        more = f" (+{len(result.violations) - 1} more; --json lists them)" if len(result.violations) > 1 else ""
        text = f"{model}: does not conform to target {target}: {result.violations[0].describe()}{more}"
    _emit(as_json, payload, text)
    if not result.ok:
        sys.exit(1)


@cli.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Engine file to write.")
@click.option(
    "--shapes",
    "shapes",
    multiple=True,
    required=True,
    help="One optimization profile: 'name:min,opt,max[;name:min,opt,max]', dims joined by x "
    "(input_ids:1x8,1x128,4x512). Repeat for more profiles.",
)
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache to reuse and update.")
@click.option("--fp16", is_flag=True, help="Assert the (strongly typed) model carries float16 tensors.")
@click.option("--plugins", is_flag=True, help="Register the ai.onnxcomp MatMulInt4 TensorRT plugin first.")
@click.option("--print-trtexec", is_flag=True, help="Print the equivalent trtexec command and exit.")
@_json_option
def build_engine_command(model, output, shapes, timing_cache, fp16, plugins, print_trtexec, as_json):
    """Build a TensorRT engine from MODEL (which must pass `onnxcomp check --target tensorrt`):
    strongly typed network, one optimization profile per --shapes, a JSON side file OUTPUT.json.
    Unverified on machines without TensorRT (see README)."""
    profiles = [parse_shapes(spec) for spec in shapes]
    if print_trtexec:
        load_checked(model)
        click.echo(trtexec_command(model, output, profiles, timing_cache, plugins))
        return
    side = build_engine(model, output, profiles, timing_cache, fp16, plugins)
    _emit(as_json, side, f"wrote {output} and {output}.json (TensorRT {side['versions']['tensorrt']})")


@cli.command("targets")
@_json_option
def targets_command(as_json):
    """List the deployment targets and what each accepts."""
    payload = {name: target_summary(t) for name, t in TARGETS.items()}
    lines = [f"{name}: {info['description']}\n    verified: {info['verified']}" for name, info in payload.items()]
    _emit(as_json, payload, "\n".join(lines))


@cli.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--layers/--no-layers", default=True, show_default=True, help="List every layer with weights.")
@_json_option
def inspect_command(model, layers, as_json):
    """Show MODEL's opset, operators, parameters and bytes per layer, precisions, external data."""

    info = inspect(model)
    lines = [
        f"{info['path']}: {_mb(info['file_bytes'])}, IR {info['ir_version']}, opsets {info['opsets']}, "
        f"producer {info['producer'] or '?'}",
        "inputs:  " + ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in info["inputs"]),
        "outputs: " + ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in info["outputs"]),
        f"{info['parameters']:,} parameters in {_mb(info['initializer_bytes'])} of initializers; "
        f"{info['quantized_activations']} quantized activation tensors; "
        f"external data: {', '.join(info['external_data']) or 'none'}",
        "operators: " + ", ".join(f"{op} {n}" for op, n in info["operators"].items()),
        f"weight MACs per token/image (float MatMul/Gemm/Conv): {info['weight_macs']:,}",
    ]
    if layers and info["layers"]:
        rows = [
            (
                layer["node"],
                layer["op"],
                layer["activation"],
                " + ".join(w["precision"] for w in layer["weights"]),
                f"{layer['params']:,}",
                f"{layer['bytes'] / 1e3:.1f} kB",
            )
            for layer in info["layers"]
        ]
        lines += ["", _table(rows, ("layer", "op", "activation", "weights", "params", "bytes"))]
    _emit(as_json, info, "\n".join(lines))


@cli.command("eval")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click.option(
    "--model-kind",
    help="Zoo model kind: use its metric (minilm: cosine and NN agreement; digits: accuracy; smollm2: perplexity).",
)
@click.option(
    "--data", help="Calibration-style data (.npz folder, module:function): report the output deviation on it."
)
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 4096), help="Batch size for latency.")
@click.option(
    "--sequence",
    default=128,
    show_default=True,
    type=click.IntRange(1, 32768),
    help="Length of dynamic non-batch axes for latency.",
)
@click.option(
    "--runs",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100000),
    help="Timed runs per model (interleaved), after 5 warm-up runs.",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="ONNX Runtime intra-op threads (same for both models).",
)
@_json_option
def eval_command(original, compressed, model_kind, data, batch, sequence, runs, threads, as_json):
    """Compare ORIGINAL and COMPRESSED: metric, latency (median/p90, ratio), file size."""

    if model_kind and data:
        raise OnnxcompError("give either --model-kind or --data, not both")
    result = evaluate(original, compressed, model_kind, data, batch, sequence, runs, threads)
    _emit(as_json, result, _table(summary_rows(result), ("", "original", "compressed")))


@cli.command()
@click.option(
    "--model",
    "kind",
    default="minilm",
    show_default=True,
    type=click.Choice(["minilm", "digits", "smollm2"]),
    help="Built-in model: minilm (sentence encoder), digits (CNN), smollm2 (135M LLM, ~2 min).",
)
@click.option("--out-dir", default="out", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--recipe",
    default="int8",
    show_default=True,
    help="Preset to run (`onnxcomp recipes` lists them), e.g. w8a8-smoothquant.",
)
@click.option("--calib-method", default="percentile", show_default=True, type=click.Choice(METHODS))
@click.option(
    "--runs", default=50, show_default=True, type=click.IntRange(1, 100000), help="Timed runs per model for latency."
)
@_json_option
def demo(kind, out_dir, recipe, calib_method, runs, as_json):
    """The whole job on a built-in model: export, calibrate, compress with a preset (int8), compare.

    \b
    Examples:
      onnxcomp demo                                            # MiniLM-L6, int8
      onnxcomp demo --model smollm2 --recipe w8a8-smoothquant  # the LLM, W8A8 with SmoothQuant
    """
    if recipe not in PRESETS:
        raise OnnxcompError(f"--recipe {recipe!r}: not a preset (presets: {', '.join(preset_names())})")
    progress.set_enabled(not as_json)
    if not as_json:
        click.echo(f"exporting {kind}, calibrating on its built-in data and compressing with {recipe} ...", err=True)
    result = run_demo(kind, out_dir, calib_method, runs, recipe)
    report = result["report"]
    text = (
        f"{kind}: {recipe} recipe, calibration method {calib_method}, compiled in {report['seconds']:.1f} s\n\n"
        + _table(summary_rows(result["evaluation"]), ("", "fp32", recipe))
        + f"\n\nfiles: {result['evaluation']['original']}  {result['evaluation']['compressed']}"
    )
    guard = next((e for e in report["passes"] if e["pass"] == "guard_speed"), None)
    if guard and guard.get("details", {}).get("reverted_layers"):  # say why the file is larger than the recipe's
        text += (
            "\n" + PASSES["guard_speed"].summary(guard["details"]) + " (ONNXCOMP_SPEED_GUARD=0 keeps them quantized)"
        )
    _emit(as_json, result, text)


@cli.command()
@_json_option
def recipes(as_json):
    """List the preset recipes and every pass with its options (for recipe files)."""

    payload = {
        "presets": {name: [p for p, _ in steps] for name, steps in PRESETS.items()},
        "preset_options": {name: {p: o for p, o in steps if o} for name, steps in PRESETS.items()},
        "passes": {
            name: {
                "summary": (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0],
                "options": cls.options,
            }
            for name, cls in PASSES.items()
        },
    }
    lines = ["presets:"] + [f"  {n}: {' → '.join(p)}" for n, p in payload["presets"].items()]
    set_options = [
        f"  {n}: " + "; ".join(f"{p} {json.dumps(o)}" for p, o in opts.items())
        for n, opts in payload["preset_options"].items()
        if opts
    ]
    lines += (["", "options the presets set:"] + set_options if set_options else []) + ["", "passes:"]
    for name, info in payload["passes"].items():
        lines.append(f"  {info['summary']}")
        for opt, default in info["options"].items():
            lines.append(f"      {opt} = {json.dumps(default)}")
    _emit(as_json, payload, "\n".join(lines))


@cli.command("build-ops")
@click.option("--cpu-only", is_flag=True, help="Build without the CUDA kernels even if nvcc is available.")
@click.option("--force", is_flag=True, help="Rebuild even if the cached library is up to date.")
@_json_option
def build_ops(cpu_only, force, as_json):
    """Build the ai.onnxcomp::MatMulInt4 custom-op library (g++, plus nvcc for CUDA when present) into the cache."""

    try:
        info = build_library(cuda=False if cpu_only else None, force=force)
    except BuildError as exc:
        click.echo(f"error: build-ops: {exc}", err=True)
        sys.exit(2)
    spills = sum(k.get("spill_stores", 0) + k.get("spill_loads", 0) for k in info.get("kernels", []))
    how = "cached" if info["cached"] else "built in %s s" % info["seconds"]
    cuda = "yes (" + ", ".join(info["archs"]) + ")" if info["cuda"] else "no"
    text = f"{info['path']}\n  cuda: {cuda}  {how}"
    if info["cuda"]:
        text += (
            f"\n  kernel entries compiled: {len(info['kernels'])} over {len(info['archs'])} archs, "
            f"spill bytes: {spills}"
        )
    _emit(as_json, info, text)


def main():
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="onnxcomp")
