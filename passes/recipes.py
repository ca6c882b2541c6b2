"""Recipes: an ordered list of (pass name, options). Presets by name, or a TOML/YAML file.

A recipe file either lists every pass:

    [[passes]]
    pass = "fold_constants"
    [[passes]]
    pass = "quantize_qdq"
    method = "entropy"

or starts from a preset and overrides options of its passes:

    base = "int8"
    [options.quantize_qdq]
    activation_dtype = "int8"

Either may name the runtime it is for: `target = "tensorrt"` (see `onnxcomp.emit.targets`), and
treat initializers that are also graph inputs as constants: `inline_input_initializers = true`.
"""

import copy
from pathlib import Path

import tomllib
import yaml

from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import PASSES

CANONICALIZE = [("fold_constants", {}), ("simplify", {}), ("fold_batchnorm", {}), ("remove_unused", {})]

PRESETS: dict[str, list[tuple[str, dict]]] = {
    "canonicalize": CANONICALIZE,
    "int8": [*CANONICALIZE, ("calibrate", {}), ("quantize_qdq", {}), ("quantize_embedding", {}), ("remove_unused", {})],
    # SmoothQuant (α searched per group; an explicit Mul where no producer can absorb 1/s), then
    # the activations are measured again (smoothing changed them) and quantized.
    "w8a8-smoothquant": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("smoothquant", {"alpha": "auto", "fallback": "mul"}),
        ("calibrate", {}),
        ("quantize_qdq", {}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    # SmoothQuant, then int8 with run-time activation ranges for MatMul/Gemm (DynamicQuantizeLinear: no
    # calibrated range to go stale on data unlike the calibration text); Convs keep calibrated ranges.
    "w8a8-dynamic": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("smoothquant", {"alpha": "auto", "fallback": "mul"}),
        ("calibrate", {}),
        ("quantize_qdq", {"activations": "dynamic"}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    # Weight-only: int4 blocks (group 128, symmetric) read by ONNX Runtime's MatMulNBits;
    # activations stay float. The word-embedding table goes int8 per row.
    "w4a16-rtn": [*CANONICALIZE, ("quantize_weight_only", {}), ("quantize_embedding", {}), ("remove_unused", {})],
    "w8a16": [*CANONICALIZE, ("quantize_weight_only", {"bits": 8}), ("quantize_embedding", {}), ("remove_unused", {})],
    # AWQ: activation-aware scales folded into norms/producers, then RTN with output-error clipping.
    "w4a16-awq": [*CANONICALIZE, ("quantize_weight_only_awq", {}), ("quantize_embedding", {}), ("remove_unused", {})],
    # GPTQ: the same formats and layout as w4a16-rtn; codes chosen with Hessians of calibration inputs.
    "w4a16-gptq": [*CANONICALIZE, ("quantize_weight_only_gptq", {}), ("quantize_embedding", {}), ("remove_unused", {})],
    # AWQ's scales folded in first, then GPTQ chooses the codes of the scaled weights.
    "w4a16-awq-gptq": [
        *CANONICALIZE,
        ("quantize_weight_only_awq", {"scale_only": True}),
        ("quantize_weight_only_gptq", {}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    # W8A8 with per-layer float fallback: SmoothQuant, the few outlier input channels of a layer moved
    # to a float side path, then the layers whose int8 error (measured one by one) is largest stay
    # float until the rest carry ≤ 30 % of the summed error (≤ 25 % of the layers and of their weights);
    # the int8 weights are rounded by GPTQ, in the sensitivity probe as in the output (MiniLM held-out
    # cosine 0.99924 → 0.99940).
    "w8a8-mixed": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("smoothquant", {"alpha": "auto", "fallback": "mul"}),
        ("calibrate", {}),
        ("split_outliers", {}),
        ("calibrate", {}),
        ("plan_fallback", {"max_fallback_weights": 0.25, "weight_rounding": "gptq"}),
        ("quantize_qdq", {"weight_rounding": "gptq"}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    # Structured pruning (issue 13): MLP neurons and CNN filters removed, kept rows refit by least
    # squares on calibration Grams; then optionally quantized (the second calibrate measures the
    # pruned model).
    "prune": [*CANONICALIZE, ("calibrate", {}), ("prune_structured", {}), ("remove_unused", {})],
    # prune-w4a16 quantizes with GPTQ: SmolLM2 at 20 % of block params, ppl 1.51× fp32 vs 1.79× with RTN.
    "prune-w4a16": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("prune_structured", {}),
        ("quantize_weight_only_gptq", {}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    "prune-int8": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("prune_structured", {}),
        ("calibrate", {}),
        ("quantize_qdq", {}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
    # Mixed precision: each layer's scheme (int4 g32/64/128, sym/asym, int8, or fp16) chosen from its measured
    # sensitivity to fit the size of the uniform preset (or `size_budget`); codes from AWQ scales + GPTQ.
    "w4a16-mixed": [
        *CANONICALIZE,
        ("calibrate", {}),
        ("plan_precision", {}),
        ("quantize_weight_only_awq", {"scale_only": True}),
        ("quantize_weight_only_gptq", {}),
        ("store_fp16", {}),
        ("quantize_embedding", {}),
        ("remove_unused", {}),
    ],
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def load_recipe(recipe: str | Path | list) -> list[tuple[str, dict]]:
    """Resolve a preset name, a recipe file, or an explicit list into [(pass, options)]."""
    if isinstance(recipe, list):
        steps = [(name, dict(opts)) for name, opts in recipe]
    elif str(recipe) in PRESETS:
        steps = copy.deepcopy(PRESETS[str(recipe)])
    else:
        path = Path(recipe)
        if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
            raise OnnxcompError(
                f"unknown recipe {str(recipe)!r} (presets: {', '.join(preset_names())}; or a .toml/.yaml file)"
            )
        if not path.is_file():
            raise OnnxcompError(f"{path}: recipe file not found")
        steps = _parse_file(path)
    if not steps:
        where = "recipe" if isinstance(recipe, list) else str(recipe)
        raise OnnxcompError(f"{where}: the recipe has no passes (it would only copy the model)")
    for name, _ in steps:
        if name not in PASSES:
            raise OnnxcompError(f"recipe: unknown pass {name!r} (known: {', '.join(sorted(PASSES))})")
    return steps


def recipe_target(recipe: str | Path | list) -> str | None:
    """The `target = "…"` a recipe file names (None for presets, lists and files without one)."""
    if isinstance(recipe, list) or str(recipe) in PRESETS:
        return None
    path = Path(recipe)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml") or not path.is_file():
        return None
    target = _read_table(path).get("target")
    if target is not None and not isinstance(target, str):
        raise OnnxcompError(f"{path}: 'target' must be a target name")
    return target


def recipe_inline_input_initializers(recipe: str | Path | list) -> bool:
    """A recipe file's `inline_input_initializers = true` (False for presets, lists, files without it)."""
    if isinstance(recipe, list) or str(recipe) in PRESETS:
        return False
    path = Path(recipe)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml") or not path.is_file():
        return False
    value = _read_table(path).get("inline_input_initializers", False)
    if not isinstance(value, bool):
        raise OnnxcompError(f"{path}: 'inline_input_initializers' must be true or false")
    return value


def _read_table(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OnnxcompError(f"{path}: cannot parse recipe ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _parse_file(path: Path) -> list[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OnnxcompError(f"{path}: cannot parse recipe ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise OnnxcompError(f"{path}: a recipe must be a table with 'passes' or 'base'")
    unknown = sorted(
        set(data) - {"name", "description", "passes", "base", "options", "target", "inline_input_initializers"}
    )
    if unknown:
        raise OnnxcompError(f"{path}: unknown recipe key {unknown[0]!r}")
    if "passes" in data and not isinstance(data["passes"], list):
        raise OnnxcompError(f"{path}: 'passes' must be a list of tables")
    if "base" in data and not isinstance(data["base"], str):
        raise OnnxcompError(f"{path}: 'base' must be a preset name")
    options = data.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise OnnxcompError(f"{path}: 'options' must map pass names to tables of options")
    if "passes" in data:
        steps = []
        for i, entry in enumerate(data["passes"]):
            if not isinstance(entry, dict) or "pass" not in entry:
                raise OnnxcompError(f"{path}: passes[{i}] needs a 'pass' name")
            entry = dict(entry)
            steps.append((entry.pop("pass"), entry))
    elif "base" in data:
        if data["base"] not in PRESETS:
            raise OnnxcompError(f"{path}: unknown base preset {data['base']!r} (presets: {', '.join(preset_names())})")
        steps = copy.deepcopy(PRESETS[data["base"]])
    else:
        raise OnnxcompError(f"{path}: a recipe needs 'passes' or 'base'")
    return apply_overrides(steps, options, str(path))


def apply_overrides(
    steps: list[tuple[str, dict]], overrides: dict[str, dict], where: str = "options"
) -> list[tuple[str, dict]]:
    """Set options on every step of the named passes; a pass absent from the recipe is an error."""
    names = {name for name, _ in steps}
    for pass_name, opts in overrides.items():
        if pass_name not in names:
            raise OnnxcompError(f"{where}: options given for pass {pass_name!r}, which the recipe does not run")
        for name, step_opts in steps:
            if name == pass_name:
                step_opts.update(opts)
    return steps
