"""PyTorch → ONNX export (torch.onnx dynamo exporter) and upgrade of existing ONNX files."""

import os
import tempfile
import warnings
from pathlib import Path

import onnx

from onnxcomp.calibration.readers import load_callable
from onnxcomp.errors import OnnxcompError
from onnxcomp.extras import require
from onnxcomp.ir.modelio import DEFAULT_OPSET, check_output_path, check_proto, load_proto, save_model, upgrade_opset


def export_entry(entry: str, output: str | os.PathLike, opset: int | None = None) -> onnx.ModelProto:
    """Export `module:function`, which returns (model, inputs) or (model, inputs, dynamic_axes).

    inputs: a dict of name → example tensor. dynamic_axes: {name: {axis: dim name}}; default:
    axis 0 of every input is `batch`. The file is written atomically and checked.
    """
    check_output_path(output)
    function = load_callable(entry)
    try:
        built = function()
    except Exception as exc:  # the user's code: one line naming it
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OnnxcompError(f"{entry}: raised {type(exc).__name__}" + (f": {message}" if message else "")) from None
    if not isinstance(built, tuple) or len(built) not in (2, 3):
        raise OnnxcompError(f"{entry}: must return (model, inputs) or (model, inputs, dynamic_axes)")
    model, inputs, *rest = built
    dynamic_axes = rest[0] if rest else {name: {0: "batch"} for name in inputs}
    return export_module(model, inputs, output, dynamic_axes, opset)


def export_module(
    model, inputs: dict, output, dynamic_axes: dict, opset: int | None = None, output_names: list[str] | None = None
) -> onnx.ModelProto:
    torch = require("torch", "export", "export of a PyTorch module")
    if not isinstance(inputs, dict) or not inputs:
        raise OnnxcompError("export: example inputs must be a non-empty dict of input name -> tensor")
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {
        name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in dynamic_axes.get(name, {}).items()}
        for name in inputs
    }
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp_path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                model,
                (),
                str(tmp_path),
                kwargs=inputs,
                dynamo=True,
                opset_version=opset or DEFAULT_OPSET,
                input_names=list(inputs),
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:
            raise OnnxcompError(f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        proto = onnx.load(str(tmp_path))
    proto = upgrade_opset(proto, opset or DEFAULT_OPSET, exact=opset is not None)
    check_proto(proto, "exported model")
    save_model(proto, output)
    return proto


def upgrade_file(path: str | os.PathLike, output: str | os.PathLike, opset: int | None = None) -> onnx.ModelProto:
    """Check an existing ONNX file and write it converted to `opset`."""
    check_output_path(output, path)
    proto = upgrade_opset(load_proto(path), opset or DEFAULT_OPSET, exact=opset is not None)
    check_proto(proto, str(output))
    save_model(proto, output)
    return proto
