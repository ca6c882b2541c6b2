"""The Python API: `compress(model, recipe, calibration=...)` → (compressed model, report)."""

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxcomp.cache import digest
from onnxcomp.calibration.readers import make_reader
from onnxcomp.emit.conformance import check_input, require_conformance
from onnxcomp.emit.targets import target_named
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import (
    INPUT_INITIALIZER,
    drop_initializer_inputs,
    initializer_bytes,
    input_initializers,
    input_specs,
)
from onnxcomp.ir.modelio import (
    DEFAULT_OPSET,
    check_model,
    check_output_path,
    check_size,
    check_tensor_data,
    check_weights,
    external_bytes,
    external_tensors,
    ir_with_external_data,
    is_large,
    load_external_data,
    read_model_file,
    release_external_data,
    save_model,
    save_with_external_data,
    serialize,
    tensor_bytes,
    to_ir,
    upgrade_opset,
    write_bytes_atomic,
)
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.passes.manager import Pipeline
from onnxcomp.passes.recipes import apply_overrides, load_recipe, recipe_inline_input_initializers, recipe_target
from onnxcomp.precision.measure import model_error
from onnxcomp.precision.plan import PrecisionPlan

# passes whose ONNX Runtime sessions serialize the whole model (GPTQ's stages, precision planning and
# measurement, pruning's sequential statistics): refused on the large-model path
NOT_FOR_LARGE_MODELS = {"quantize_weight_only_gptq", "plan_precision", "plan_fallback", "prune_structured"}


@dataclass
class CompressResult:
    model: onnx.ModelProto
    report: dict

    def save(self, path: str | os.PathLike) -> int:
        if external_tensors(self.model):  # a large model's result: its tensors are in the written files
            raise OnnxcompError(
                f"this result is already written to {self.report['output']} with its external data "
                f"({self.report['output']}.data); copy both files"
            )
        return save_model(self.model, path)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def compress(
    model: str | os.PathLike | onnx.ModelProto,
    recipe: str | os.PathLike | list = "int8",
    calibration=None,
    *,
    output: str | os.PathLike | None = None,
    options: dict[str, dict] | None = None,
    verify: bool = False,
    opset: int | None = None,
    tokenizer=None,
    use_cache: bool = True,
    precision_plan: PrecisionPlan | None = None,
    target: str | None = None,
    speed_guard: bool | None = None,
    inline_input_initializers: bool | None = None,
    fp16: bool = False,
) -> CompressResult:
    """Compress an ONNX model with a recipe; identical inputs give byte-identical output.

    model: a path or ModelProto (never modified). recipe: a preset name, a .toml/.yaml file,
    or [(pass, options)]. calibration: a folder of .npz, a .txt file (needs `tokenizer`), a
    folder of images, `module:function`, a callable or a list of feeds. options: per-pass
    overrides, e.g. {"quantize_qdq": {"method": "entropy"}}. verify: run the original and the
    current model in ONNX Runtime after every pass and record the output deviation.
    precision_plan: an `onnxcomp.precision.PrecisionPlan` that sets each layer's scheme for the
    weight-only passes instead of the presets' rule.
    target: the runtime the output is for (`onnxcomp.emit.targets.TARGETS`: ort-cpu, the default,
    ort-cuda, tensorrt, portable; else a recipe file's `target`); passes adapt to it and the output
    must pass its conformance check.
    speed_guard: end with the `guard_speed` pass (quantized layers that make the model slower than
    its input on this machine go back to float; options via `options={"guard_speed": {...}}`).
    Default: on, unless the environment sets ONNXCOMP_SPEED_GUARD=0. Its decision depends on
    timing: it is cached per machine, so repeated builds there give identical bytes; turn it off
    where the output must not depend on the machine at all.
    inline_input_initializers: initializers that are also graph inputs (IR >= 4) are overridable
    defaults, so by default passes leave them in float and the report lists them
    (`input_initializers`); True treats them as constants (removed from the graph inputs first,
    then compressed like any weight). None: a recipe file's `inline_input_initializers`, else False.
    fp16: end the recipe with `convert_fp16` (the strongly typed float16 variant: float tensors,
    weights and QDQ scales in float16, Casts at the inputs and outputs; for targets that compute in
    float16: ort-cuda, tensorrt, portable).
    """
    start = time.perf_counter()
    _check_arguments(model, recipe, options)
    if output is not None:  # before any work: a bad output path fails fast
        check_output_path(output, *([model] if not isinstance(model, onnx.ModelProto) else []))
    deployment = target_named(target or recipe_target(recipe))  # an unknown target: refused before any work
    if not isinstance(fp16, bool):
        raise OnnxcompError(f"fp16 must be True or False, not {fp16!r}")
    fp16_step = [("convert_fp16", {})] if fp16 else []
    steps = apply_overrides(with_speed_guard(load_recipe(recipe) + fp16_step, speed_guard), options or {}, "options")
    if inline_input_initializers is None:
        inline_input_initializers = recipe_inline_input_initializers(recipe)
    if not isinstance(inline_input_initializers, bool):
        raise OnnxcompError(
            f"inline_input_initializers must be True or False, not {type(inline_input_initializers).__name__}"
        )
    if precision_plan is not None and not isinstance(precision_plan, PrecisionPlan):
        raise OnnxcompError(
            f"precision_plan must be an onnxcomp.precision.PrecisionPlan, not {type(precision_plan).__name__}"
        )
    if isinstance(model, onnx.ModelProto):
        proto, source, large = model, "<ModelProto>", False
        check_size(proto, source)
        check_tensor_data(proto, source)
        input_digest = digest(serialize(model))
    else:
        (proto, data), source = read_model_file(model, load_external=False), str(model)
        large = is_large(tensor_bytes(proto) + external_bytes(proto))
        if large and output is None:
            raise OnnxcompError(f"{source}: a model over 2 GiB needs an output path (written with external data)")
        if large and verify:
            raise OnnxcompError(f"{source}: --verify is not supported for models over 2 GiB")
        unsupported = sorted({name for name, _ in steps} & NOT_FOR_LARGE_MODELS) if large else []
        if unsupported:
            raise OnnxcompError(
                f"{source}: pass {unsupported[0]!r} does not support models over 2 GiB yet "
                "(their ONNX Runtime sessions are built from one serialized model); "
                "canonicalize, int8, w8a8-smoothquant, w4a16-rtn, w8a16 and w4a16-awq do"
            )
        if not large:
            load_external_data(proto, source)
            check_size(proto, source)
        check_tensor_data(proto, source)
        input_digest = digest(data)
        del data
    upgraded = upgrade_opset(proto, opset or DEFAULT_OPSET, exact=opset is not None)
    ir_model = ir_with_external_data(upgraded, source, source) if large else to_ir(upgraded, source)
    overridable = (drop_initializer_inputs if inline_input_initializers else input_initializers)(ir_model)
    check_model(ir_model, source if upgraded is proto else f"{source} converted to opset {opset or DEFAULT_OPSET}")
    check_weights(ir_model, source)
    if large:
        release_external_data(ir_model)  # the checks read every weight: unmap them again
    check_input(ir_model, deployment, source)
    ShapeInferencePass()(ir_model)  # passes read tensor dtypes: make them all known

    reader = make_reader(calibration, input_specs(upgraded), tokenizer) if calibration is not None else None
    input_bytes = proto.ByteSize() + (external_bytes(proto) if large else 0)
    context = Context(
        calibration=reader,
        use_cache=use_cache,
        precision_plan=precision_plan,
        input_bytes=input_bytes,
        graph_bytes=max(0, input_bytes - initializer_bytes(ir_model)),
        target=deployment,
        reference=upgraded,
    )
    passes = [_make_pass(name, context, opts) for name, opts in steps]
    verify_feed = _verify_feed(reader) if verify else None
    if verify and verify_feed is None:
        raise OnnxcompError("--verify needs calibration data to run the models on (pass --calib)")

    entries = Pipeline(passes, context).run(ir_model, verify_feed)
    conformance = require_conformance(ir_model, deployment, "the compressed model")
    if large:  # written now, streamed from the tensors; the result's proto refers to the written data
        output_bytes = save_with_external_data(ir_model, output)
        result_proto, data = onnx.load(output, load_external_data=False), None
    else:
        result_proto = ir.to_proto(ir_model)
        data = serialize(result_proto)
        output_bytes = len(data)
    report = {
        "input": source,
        "input_digest": input_digest,
        "output": str(output) if output is not None else None,
        "recipe": [{"pass": name, **opts} for name, opts in steps],
        "passes": entries,
        "target": deployment.name,
        "conformance": conformance.as_dict(),
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "seconds": round(time.perf_counter() - start, 3),
        "process_peak_rss_bytes": _peak_rss_bytes(),
    }
    if overridable:
        report["input_initializers"] = {
            "names": overridable,
            "treated_as": "constants" if inline_input_initializers else "inputs",
            "reason": INPUT_INITIALIZER,
        }
    if context.size_budget is not None:
        report["size_budget"] = {
            "bytes": context.size_budget,
            "output_bytes": output_bytes,
            "met": output_bytes <= context.size_budget,
        }
    guard = next(
        (e["details"] for e in entries if e["pass"] == "guard_speed" and "before" in e.get("details", {})), None
    )
    if guard is not None:
        report["latency_budget"] = {
            "ratio": guard["latency_budget"],
            "measured_before": guard["before"],
            "measured": guard["after"],
            "met": guard["met"],
        }
    if context.error_feeds and data is not None:  # a planned model: its error is measured, not predicted
        reference = source if upgraded is proto and not isinstance(model, onnx.ModelProto) else proto
        error, metric = model_error(reference, data, context.error_feeds)  # a path: ORT reads it, no copy here
        report["final_error"] = {"metric": metric, "value": error, "feeds": len(context.error_feeds)}
    if output is not None and data is not None:
        write_bytes_atomic(output, data)
    return CompressResult(result_proto, report)


def speed_guard_default() -> bool:
    """On unless ONNXCOMP_SPEED_GUARD is 0/off/false/no."""
    return os.environ.get("ONNXCOMP_SPEED_GUARD", "1").strip().lower() not in ("0", "off", "false", "no")


def with_speed_guard(steps: list[tuple[str, dict]], speed_guard: bool | None) -> list[tuple[str, dict]]:
    """The recipe ending with `guard_speed` (added when absent), or without it when the guard is off."""
    if speed_guard is None:
        speed_guard = speed_guard_default()
    if not isinstance(speed_guard, bool):
        raise OnnxcompError(f"speed_guard must be True, False or None, not {speed_guard!r}")
    steps = [(name, opts) for name, opts in steps if speed_guard or name != "guard_speed"]
    if speed_guard and "guard_speed" not in {name for name, _ in steps}:
        steps.append(("guard_speed", {}))
    return steps


def _check_arguments(model, recipe, options) -> None:
    """The argument types, before any work: one line instead of a traceback deep inside."""
    if not isinstance(model, str | os.PathLike | onnx.ModelProto):
        hint = " (bytes: onnx.load_model_from_string(data) first)" if isinstance(model, bytes | bytearray) else ""
        raise OnnxcompError(f"model must be a path or an onnx.ModelProto, not {type(model).__name__}{hint}")
    if not isinstance(recipe, str | os.PathLike | list):
        raise OnnxcompError(
            f"recipe must be a preset name, a recipe file or a list of (pass, options), not {type(recipe).__name__}"
        )
    if isinstance(recipe, list):
        for i, step in enumerate(recipe):
            if not (isinstance(step, tuple | list) and len(step) == 2 and isinstance(step[0], str)):
                raise OnnxcompError(f"recipe[{i}]: expected (pass name, options dict), got {step!r:.80}")
            if not isinstance(step[1], dict):
                raise OnnxcompError(f"recipe[{i}] ({step[0]}): options must be a dict, not {type(step[1]).__name__}")
    if options is not None and not (isinstance(options, dict) and all(isinstance(v, dict) for v in options.values())):
        raise OnnxcompError('options must map pass names to dicts of options, e.g. {"quantize_qdq": {"method": "mse"}}')


def _make_pass(name: str, context: Context, opts: dict):
    """The pass with its options; a value of the wrong type is one line naming pass and option."""
    try:
        return PASSES[name](context, **opts)
    except OnnxcompError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise OnnxcompError(f"pass {name!r}: bad option value ({exc}); options given: {opts}") from None


def _verify_feed(reader):
    if reader is None:
        return None
    for feed in reader:
        return feed
    return None


def output_name_for(path: str | os.PathLike, suffix: str = "int8") -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.{suffix}.onnx")
