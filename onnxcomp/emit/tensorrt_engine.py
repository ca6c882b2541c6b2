"""Building a TensorRT engine from a model that passes the `tensorrt` target's conformance check.

UNVERIFIED HERE: TensorRT cannot be installed on the development machines. The call sequence
follows TensorRT 10's documented Python API and is tested against a recording stand-in module;
the conformance check (`onnxcomp.emit.conformance`, target `tensorrt`) is the strong check.

    logger  = trt.Logger(WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    parser  = trt.OnnxParser(network, logger); parser.parse_from_file(model)
    config  = builder.create_builder_config()
    per --shapes: profile = builder.create_optimization_profile(); profile.set_shape(name, min, opt,
              max) for each input; config.add_optimization_profile(profile)
    cache   = config.create_timing_cache(bytes of --timing-cache or b""); config.set_timing_cache(cache, False)
    plan    = builder.build_serialized_network(network, config)
then the engine and the updated timing cache are written atomically, and a JSON side file
(`<engine>.json`) records the shapes, precisions and versions. Strongly typed networks take every
tensor's type from the model (TensorRT 11 has no other mode), so no precision flags are set:
`--fp16` only asserts that the model carries float16 tensors. `--plugins` registers the project's
MatMulInt4 plugin (`onnxcomp.custom_ops.tensorrt_plugin`) before parsing.
"""

import importlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from onnxcomp import __version__
from onnxcomp.custom_ops import tensorrt_plugin
from onnxcomp.emit.conformance import require_conformance
from onnxcomp.emit.targets import TENSORRT
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.modelio import check_output_path, read_model_file, write_bytes_atomic

INSTALL_HINT = "build-engine needs TensorRT's Python package: pip install onnxcomp[tensorrt]"
_SHAPE = re.compile(r"^(?P<name>[^:;]+):(?P<min>\d+(x\d+)*),(?P<opt>\d+(x\d+)*),(?P<max>\d+(x\d+)*)$")


@dataclass(frozen=True)
class InputRange:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def parse_shapes(spec: str) -> list[InputRange]:
    """One optimization profile: 'name:min,opt,max[;name:min,opt,max…]' with dims joined by 'x'
    (input_ids:1x8,1x128,4x512). Malformed text or min ≤ opt ≤ max broken is one error line."""
    ranges = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        match = _SHAPE.match(part)
        if not match:
            raise OnnxcompError(
                f"--shapes {part!r}: expected name:min,opt,max with dims joined by x (x:1x8,1x64,4x128)"
            )
        dims = [tuple(int(d) for d in match[k].split("x")) for k in ("min", "opt", "max")]
        if len({len(d) for d in dims}) != 1:
            raise OnnxcompError(f"--shapes {part!r}: min, opt and max need the same rank")
        if not all(a <= b <= c for a, b, c in zip(*dims)):
            raise OnnxcompError(f"--shapes {part!r}: needs min <= opt <= max in every dimension")
        ranges.append(InputRange(match["name"], *dims))
    if not ranges:
        raise OnnxcompError("--shapes: empty")
    names = [r.name for r in ranges]
    if len(set(names)) != len(names):
        raise OnnxcompError(f"--shapes {spec!r}: an input named twice in one profile")
    return ranges


def _check_profiles(model: ir.Model, profiles: list[list[InputRange]]) -> None:
    inputs = {v.name: v for v in model.graph.inputs}
    dynamic = {name for name, v in inputs.items() if v.shape is None or any(not isinstance(d, int) for d in v.shape)}
    for profile in profiles:
        given = {r.name for r in profile}
        for r in profile:
            if r.name not in inputs:
                raise OnnxcompError(f"--shapes: the model has no input {r.name!r} (inputs: {', '.join(inputs)})")
            shape = inputs[r.name].shape
            if shape is not None and len(shape) != len(r.min):
                raise OnnxcompError(f"--shapes {r.name}: rank {len(r.min)}, the input has rank {len(shape)}")
        missing = sorted(dynamic - given)
        if missing:
            raise OnnxcompError(f"--shapes: every profile needs the dynamic input(s) {', '.join(missing)}")


def _dims(d: tuple[int, ...]) -> str:
    return "x".join(map(str, d))


def trtexec_command(model, engine, profiles, timing_cache=None, plugins=False) -> str:
    """The equivalent trtexec line (trtexec takes one profile: the first; Python plugins it cannot load)."""
    first = profiles[0]
    args = ["trtexec", f"--onnx={model}", f"--saveEngine={engine}", "--stronglyTyped"]
    for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
        args.append(f"{flag}=" + ",".join(f"{r.name}:{_dims(getattr(r, key))}" for r in first))
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    line = shlex.join(args)
    if plugins:
        line += "  # MatMulInt4 is a Python plugin (tensorrt.plugin): trtexec cannot load it"
    if len(profiles) > 1:
        line += f"  # {len(profiles) - 1} more profile(s) need the Python API"
    return line


def _precisions(model: ir.Model) -> list[str]:
    types = {v.dtype.name.lower() for v in model.graph.initializers.values() if v.dtype is not None}
    types |= {v.dtype.name.lower() for v in model.graph.inputs if v.dtype is not None}
    return sorted(types)


def load_checked(model_path) -> ir.Model:
    """The model, refused with one line unless it passes the tensorrt target's conformance check."""
    proto, _ = read_model_file(model_path)
    model = ir.from_proto(proto)
    require_conformance(model, TENSORRT, str(model_path))
    return model


def import_tensorrt():
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise OnnxcompError(INSTALL_HINT) from None


def build_engine(
    model_path,
    engine_path,
    profiles: list[list[InputRange]],
    timing_cache=None,
    fp16: bool = False,
    plugins: bool = False,
) -> dict:
    """Build and write the engine (see the module docstring); returns the side file's content."""
    check_output_path(engine_path, model_path)
    model = load_checked(model_path)
    _check_profiles(model, profiles)
    precisions = _precisions(model)
    if fp16 and "float16" not in precisions:
        raise OnnxcompError(
            f"{model_path}: --fp16 but the model has no float16 tensors (a strongly typed network runs in the "
            "model's own types: convert it to fp16 first)"
        )
    trt = import_tensorrt()
    plugin = tensorrt_plugin.register() if plugins else None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise OnnxcompError(f"{model_path}: TensorRT's ONNX parser refused it: {errors[0] if errors else 'no reason'}")
    config = builder.create_builder_config()
    for profile_ranges in profiles:
        profile = builder.create_optimization_profile()
        for r in profile_ranges:
            profile.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OnnxcompError(f"{model_path}: TensorRT could not build an engine (see its log above)")
    write_bytes_atomic(engine_path, bytes(serialized))
    if cache_path:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    side = {
        "model": str(model_path),
        "engine": str(engine_path),
        "strongly_typed": True,
        "profiles": [[{"name": r.name, "min": r.min, "opt": r.opt, "max": r.max} for r in p] for p in profiles],
        "precisions": precisions,
        "timing_cache": str(cache_path) if cache_path else None,
        "plugins": [plugin] if plugin else [],
        "versions": {"tensorrt": str(getattr(trt, "__version__", "?")), "onnxcomp": __version__},
    }
    write_bytes_atomic(f"{engine_path}.json", json.dumps(side, indent=2).encode())
    return side
