"""Loading, checking, upgrading and atomically saving ONNX models."""

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import onnx_ir as ir
from onnx import version_converter
from onnx_ir.passes.common import CheckerPass

from onnxcomp.errors import OnnxcompError

DEFAULT_OPSET = 21
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) need 13; the exporter writes ≥ 18
MAX_OPSET = onnx.defs.onnx_opset_version()  # the newest the installed onnx knows


def load_proto(path: str | os.PathLike, check: bool = True) -> onnx.ModelProto:
    """Read an ONNX file (with its external data) and run the checker; clear error on failure."""
    proto = read_proto(path)
    if check:
        check_proto(proto, str(path))
    return proto


def read_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (with its external data); clear error when it is not one. No checks."""
    return read_model_file(path)[0]


def read_model_file(path: str | os.PathLike, load_external: bool = True) -> tuple[onnx.ModelProto, bytes]:
    """(the model with its external data, the file's bytes), reading the file once; clear error
    when it is not ONNX. load_external=False: the external data is checked (`check_external_data`)
    but left where it is (`load_external` reads it later; `ir_with_external_data` maps it)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxcompError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and others; all mean "not ONNX"
        raise OnnxcompError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    check_external_data(proto, path)
    if load_external:
        load_external_data(proto, path)
    if not proto.graph.node and not proto.graph.output:
        raise OnnxcompError(f"{path}: not an ONNX model (empty or truncated graph)")
    if model_opset(proto) > MAX_OPSET:
        raise OnnxcompError(
            f"{path}: opset {model_opset(proto)} is newer than the installed onnx knows ({MAX_OPSET}); upgrade onnx"
        )
    return proto, data


def load_external_data(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Read the (checked) external data of the model at `path` into `proto`."""
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(Path(path).parent))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OnnxcompError(f"{path}: cannot read its external data ({type(exc).__name__}: {first})") from None


def ir_with_external_data(proto: onnx.ModelProto, path: str | os.PathLike, what: str) -> ir.Model:
    """`to_ir` of a proto whose external data was not loaded: its tensors map the files lazily."""
    model = to_ir(proto, what)
    ir.external_data.set_base_dir(model.graph, str(Path(path).parent))
    return model


def release_external_data(model: ir.Model) -> None:
    """Unmap the external-data files the model's tensors have read so far (they map again on the
    next read): pages read once stop counting against the process while another reader, such as
    an ONNX Runtime session, holds its own copy. A tensor whose array is still referenced stays."""
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            try:
                value.const_value.release()
            except BufferError:  # numpy views of the map are alive: keep it
                pass


def external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor of the model (initializers, Constant/attribute tensors, subgraphs) whose data
    lives in another file."""
    found: list[onnx.TensorProto] = []

    def graph(g: onnx.GraphProto) -> None:
        tensors = [*g.initializer, *(sparse.values for sparse in g.sparse_initializer)]
        for node in g.node:
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                for sub in [attr.g] if attr.HasField("g") else []:
                    graph(sub)
                for sub in attr.graphs:
                    graph(sub)
        found.extend(t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL)

    graph(proto.graph)
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                    found.append(attr.t)
    return found


def external_location(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def check_external_data(proto: onnx.ModelProto, path: Path) -> list[Path]:
    """Every external-data file must lie inside the model's folder: a relative location without
    `..`, not reaching outside through a symlink, a regular file, long enough for offset + length.
    Returns the files (sorted, unique). Refusal is one line naming the tensor and the location."""
    folder = path.parent.resolve()
    files = set()
    for tensor in external_tensors(proto):
        info = external_location(tensor)
        location = info.get("location", "")
        what = f"{path}: tensor {tensor.name!r} has external data at {location!r}"
        if not location or location.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", location):  # POSIX, UNC, drive
            raise OnnxcompError(f"{what}: only a path relative to the model's folder is allowed")
        if ".." in Path(location.replace("\\", "/")).parts:
            raise OnnxcompError(f"{what}: '..' would leave the model's folder")
        target = (path.parent / location).resolve()
        if not target.is_relative_to(folder):
            raise OnnxcompError(f"{what}: it leads outside the model's folder (to {target})")
        if not target.is_file():
            raise OnnxcompError(f"{what}: no such file")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0))
        except ValueError:
            raise OnnxcompError(f"{what}: offset and length must be integers") from None
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            raise OnnxcompError(f"{what}: offset {offset} + length {length} is past the end of the file")
        files.add(target)
    return sorted(files)


def to_ir(proto: onnx.ModelProto, what: str) -> ir.Model:
    """The model in onnx_ir; a graph it cannot represent (a name produced twice, …) is one line."""
    serde_log = logging.getLogger("onnx_ir.serde")
    level = serde_log.level
    serde_log.setLevel(logging.ERROR)  # its warnings (a dangling input, …) precede the checker's one line
    try:
        return ir.from_proto(proto)
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        text = str(cause).strip()
        raise OnnxcompError(
            f"{what}: not a valid ONNX graph ({text.splitlines()[0] if text else type(cause).__name__})"
        ) from None
    finally:
        serde_log.setLevel(level)


PROTOBUF_LIMIT = 2**31 - 1  # bytes: one serialized ModelProto
# Weights at or past this many bytes take the large-model path: external data mapped, not loaded;
# calibration runs from a saved copy; the output written with external data. Tests lower it.
LARGE_MODEL_BYTES = PROTOBUF_LIMIT


def is_large(weight_bytes: int) -> bool:
    return weight_bytes >= LARGE_MODEL_BYTES


def external_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the model's tensors held in external data (as declared: `length`, else dims x dtype)."""
    total = 0
    for tensor in external_tensors(proto):
        length = external_location(tensor).get("length")
        if length is not None:
            total += int(length)
        else:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


_ITEM_BYTES = {"float_data": 4, "int32_data": 4, "int64_data": 8, "double_data": 8, "uint64_data": 8}


def tensor_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the top graph's initializer data as loaded (external data included)."""
    return sum(
        len(t.raw_data) + sum(len(getattr(t, f)) * n for f, n in _ITEM_BYTES.items()) for t in proto.graph.initializer
    )


def check_tensor_data(proto: onnx.ModelProto, what: str) -> None:
    """Each initializer's raw bytes match its dims and dtype (the checker does not look)."""
    for tensor in proto.graph.initializer:
        if not tensor.HasField("raw_data") or tensor.data_type == onnx.TensorProto.STRING:
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            raise OnnxcompError(
                f"{what}: initializer {tensor.name!r} has unknown data type {tensor.data_type}"
            ) from None
        count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
        packed = tensor.data_type in _FOUR_BIT
        expected = (count + 1) // 2 if packed else count * itemsize
        if min(tensor.dims, default=0) < 0 or len(tensor.raw_data) != expected:
            raise OnnxcompError(
                f"{what}: initializer {tensor.name!r} holds {len(tensor.raw_data)} bytes, its shape "
                f"{list(tensor.dims)} and type need {expected}"
            )


_FOUR_BIT = {
    getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, name)
}


def check_size(proto: onnx.ModelProto, what: str) -> None:
    """Refuse, before any work, an in-memory ModelProto whose weights pass protobuf's 2 GB limit
    (it cannot be serialized); a model file with external data takes the large-model path instead."""
    size = tensor_bytes(proto)
    if size >= PROTOBUF_LIMIT:
        raise OnnxcompError(
            f"{what}: {size / 2**30:.2f} GiB of weights in one ModelProto, past protobuf's 2 GiB limit; "
            "save it with external data (onnx.save(..., save_as_external_data=True)) and pass the path"
        )


LINEAR_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def check_weights(model: ir.Model, what: str) -> None:
    """The constant weights of linear layers hold at least one value and no NaN or Inf: a quantizer
    cannot pick a scale for them (masks and other constants may hold Inf; they are not checked)."""
    for node in model.graph:
        if node.op_type not in LINEAR_OPS or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        tensor = node.inputs[1].const_value
        if tensor is None or tensor.dtype is None or not tensor.dtype.is_floating_point():
            continue
        name = f"{what}: weight {node.inputs[1].name!r} of node {node.name!r} ({node.op_type})"
        if tensor.size == 0:
            raise OnnxcompError(f"{name} has no elements (shape {tuple(tensor.shape)})")
        if not np.isfinite(tensor.numpy()).all():
            raise OnnxcompError(f"{name} contains NaN or Inf")


def check_model(model: ir.Model, what: str) -> None:
    """onnx checker with strict shape inference; raises OnnxcompError naming `what`.

    Runs through onnx_ir's CheckerPass, which hands the C checker a copy of the graph without
    the large initializers' data: memory stays near one model size, at any model size.
    """
    try:
        CheckerPass(full_check=True)(model)
    except Exception as exc:
        cause = exc.__cause__ or exc
        # the checker's message may run over lines ("... of node: \nname: mm OpType: MatMul\n is not ..."): join them
        first = " ".join(line.strip() for line in str(cause).strip().splitlines()) or type(cause).__name__
        first = first if len(first) <= 400 else first[:400] + " …"
        raise OnnxcompError(f"{what}: rejected by the ONNX checker: {first}") from None


def check_proto(proto: onnx.ModelProto, what: str) -> None:
    """`check_model` for a ModelProto (its tensors are wrapped, not copied)."""
    check_model(ir.from_proto(proto), what)


def model_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def upgrade_opset(proto: onnx.ModelProto, target: int = DEFAULT_OPSET, exact: bool = False) -> onnx.ModelProto:
    """Convert the default-domain opset up to `target` (never down). exact: the caller asked for
    exactly `target` (an explicit --opset), so a model above it is refused instead of kept."""
    current = model_opset(proto)
    if current > target and exact:
        raise OnnxcompError(f"--opset {target}: the model is at opset {current}; converting down is not supported")
    if current >= target:
        return proto
    try:
        return version_converter.convert_version(proto, target)
    except Exception as exc:
        raise OnnxcompError(f"cannot convert opset {current} to {target}: {exc}") from None


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """Refuse an output path equal to an input or in a folder we cannot write."""
    out = Path(output)
    for inp in inputs:
        if Path(inp).exists() and out.exists() and out.resolve() == Path(inp).resolve():
            raise OnnxcompError(f"{out}: output path is the same as the input; choose another")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OnnxcompError(f"{out}: folder {parent} does not exist")
    try:  # os.access says yes to root and knows nothing of read-only mounts: really try
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OnnxcompError(f"{out}: folder {parent} is not writable ({exc.strerror})") from None
    return out


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see a partial file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OnnxcompError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a normal file gets
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a file-size limit, a folder removed meanwhile
        Path(tmp).unlink(missing_ok=True)
        raise OnnxcompError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def serialize(model: ir.Model | onnx.ModelProto) -> bytes:
    """Deterministic bytes of a model (all tensors inline)."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString(deterministic=True)


def save_with_external_data(model: ir.Model, path: str | os.PathLike) -> int:
    """Write the model as `path` plus its tensors in `<name>.data` beside it, atomically: both are
    written into a temporary folder beside `path`, then renamed (the data first); on failure
    nothing is left. Tensors are streamed from their source (no whole-model copy in memory).
    Returns the bytes written."""
    path = Path(path)
    data_name = f"{path.name}.data"
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise OnnxcompError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        ir.save(model, tmp / path.name, external_data=data_name)
        written = 0
        for name in (path.name, data_name):
            os.chmod(tmp / name, 0o666 & ~_umask())
            written += (tmp / name).stat().st_size
        os.replace(tmp / data_name, path.parent / data_name)
        os.replace(tmp / path.name, path)
        return written
    except OSError as exc:  # a full disk, a file-size limit, a folder removed meanwhile
        raise OnnxcompError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(model: ir.Model | onnx.ModelProto, path: str | os.PathLike) -> int:
    """Atomically save the model; returns its size in bytes. Models ≥ 2 GB are refused for now."""
    data = serialize(model)
    write_bytes_atomic(path, data)
    return len(data)
