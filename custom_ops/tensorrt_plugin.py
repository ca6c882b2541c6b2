"""TensorRT binding of ai.onnxcomp::MatMulInt4 through TensorRT's Python quickly-deployable plugin
API (``tensorrt.plugin``, TensorRT >= 10.6). The plugin's enqueue calls the same CUDA kernels as the
ONNX Runtime library (``onnxcomp_matmul_int4`` in the built library) on TensorRT's stream.

TensorRT cannot be installed on the development machines, so this module imports ``tensorrt`` only
inside ``register()`` and is made correct by construction:
  * the shape/type rule (``output_shape``/``check_inputs``) and the argument marshalling to the
    kernel (``launch``) are plain Python, shared with the plugin callbacks, and tested on the CPU
    (``launch(..., device=0)`` runs the CPU kernel through the very same call);
  * the callbacks follow the documented ``tensorrt.plugin`` signatures: ``@trtp.register`` gets
    ``TensorDesc`` inputs and attributes, returns the output ``TensorDesc``; ``@trtp.impl`` gets
    ``Tensor`` inputs, attributes, ``outputs`` and ``stream`` (an int cudaStream_t).
The quickly-deployable API needs a fixed input list, so the plugin takes all five inputs
(A, B, scales, zero_points, bias): a TensorRT emitter materializes an absent zero_points as bytes
0x88 (zero point 8 = the symmetric default) and an absent bias as zeros, which is equivalent by the
contract. The ONNX parser finds it by op type ``MatMulInt4`` with node attribute
``plugin_namespace="onnxcomp"``.
"""

from __future__ import annotations

from .reference import GROUP_SIZES, OP_TYPE

NAMESPACE = "onnxcomp"
PLUGIN = f"{NAMESPACE}::{OP_TYPE}"
_registered = False


class TensorRTUnavailable(ImportError):
    pass


def _ptr(t):
    """The device address of a tensor, or None."""
    return None if t is None else int(t.data_ptr)


def output_shape(a_shape, n: int) -> tuple:
    return (*tuple(a_shape)[:-1], n)


def check_inputs(a_shape, b_shape, s_shape, z_shape, bias_shape, *, K: int, N: int, bits: int, group_size: int) -> None:
    """The op's own checks, for build time (TensorRT shapes are known when the engine is built)."""
    if bits != 4:
        raise ValueError(f"MatMulInt4: bits={bits} is not supported (must be 4)")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"MatMulInt4: group_size={group_size} is not supported (32, 64 or 128)")
    nb = -(-K // group_size)
    want = {"A": (K,), "B": (N, nb, group_size // 2), "scales": (N, nb), "zero_points": (N, -(-nb // 2)), "bias": (N,)}
    got = {
        "A": tuple(a_shape)[-1:],
        "B": tuple(b_shape),
        "scales": tuple(s_shape),
        "zero_points": tuple(z_shape),
        "bias": tuple(bias_shape),
    }
    for name, shape in got.items():
        if -1 not in shape and shape != want[name]:
            raise ValueError(f"MatMulInt4: input '{name}' has shape {list(shape)}, expected {list(want[name])}")


# dtype names as TensorRT (DataType.FLOAT/HALF/BF16), numpy and torch print them -> ONNX codes
_CODES = {"float": 1, "float32": 1, "half": 10, "float16": 10, "bf16": 16, "bfloat16": 16}


def _code(dtype) -> int:
    name = str(dtype).split(".")[-1].lower()
    if name not in _CODES:
        raise ValueError(f"MatMulInt4: unsupported dtype {dtype}")
    return _CODES[name]


def launch(
    lib, a, b, scales, zero_points, bias, y, *, K: int, N: int, group_size: int, stream: int = 0, device: int = 1
) -> None:
    """Calls onnxcomp_matmul_int4 with objects that have .data_ptr, .dtype and .shape (TensorRT's
    trtp.Tensor, or test doubles on the CPU with device=0)."""
    m = 1
    for d in tuple(a.shape)[:-1]:
        m *= int(d)
    msg = lib.onnxcomp_matmul_int4(
        device,
        _code(a.dtype),
        _code(scales.dtype),
        _ptr(a),
        _ptr(b),
        _ptr(scales),
        _ptr(zero_points),
        _ptr(bias),
        _ptr(y),
        m,
        N,
        K,
        group_size,
        stream or None,
    )
    if msg is not None:
        raise RuntimeError(msg.decode())


def register(library: str | None = None) -> str:
    """Registers the plugin with TensorRT (idempotent); returns its name. Raises TensorRTUnavailable
    with the reason when tensorrt (>= 10.6 with tensorrt.plugin) cannot be imported."""
    global _registered
    try:
        import tensorrt.plugin as trtp  # noqa: F401  (lazy: TensorRT is optional)
    except Exception as exc:  # ImportError, or a tensorrt without the plugin module
        raise TensorRTUnavailable(
            f"TensorRT's Python plugin API (tensorrt.plugin, TensorRT >= 10.6) is not importable: {exc}"
        ) from exc
    if _registered:
        return PLUGIN
    from typing import Tuple

    from .build import library_path
    from .cuda_runner import load

    lib = load(library or library_path(cuda=True))

    @trtp.register(PLUGIN)
    def _desc(
        a: trtp.TensorDesc,
        b: trtp.TensorDesc,
        scales: trtp.TensorDesc,
        zero_points: trtp.TensorDesc,
        bias: trtp.TensorDesc,
        K: int,
        N: int,
        bits: int,
        group_size: int,
    ) -> trtp.TensorDesc:
        y = a.like()
        y.shape_expr[-1] = N  # same leading dims as A, last dim N, dtype of A
        return y

    @trtp.impl(PLUGIN)
    def _impl(
        a: trtp.Tensor,
        b: trtp.Tensor,
        scales: trtp.Tensor,
        zero_points: trtp.Tensor,
        bias: trtp.Tensor,
        K: int,
        N: int,
        bits: int,
        group_size: int,
        outputs: Tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        check_inputs(
            a.shape, b.shape, scales.shape, zero_points.shape, bias.shape, K=K, N=N, bits=bits, group_size=group_size
        )
        launch(lib, a, b, scales, zero_points, bias, outputs[0], K=K, N=N, group_size=group_size, stream=stream)

    _registered = True
    return PLUGIN
