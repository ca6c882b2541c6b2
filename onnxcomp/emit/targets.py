"""Deployment targets: what a runtime accepts, declared once, by name.

A `Target` lists the ops it runs per domain, the blockwise weight formats it has kernels for
(`onnxcomp.emit.blockwise.FORMATS`; the first is the default), the QDQ activation dtypes (the
first is the default), the dtypes a DequantizeLinear may read for weights, whether zero points
must be 0, which bit widths may be blocked and with which block sizes, and the opset range.
Passes read these instead of hard-coding a runtime's rules; `onnxcomp.emit.conformance` checks
every output against them. `TARGETS` is the registry; `target_named` resolves a name or refuses
it with one line.

Sources (read 2026-11-30):
- ONNX Runtime, docs/OperatorKernels.md (microsoft/onnxruntime, generated from the registered
  kernels): CPUExecutionProvider and CUDAExecutionProvider sections. CUDA: DequantizeLinear 21+
  T1 = int4, int8, uint4, uint8 (float/float16 scales); com.microsoft MatMulNBits (T1 float,
  float16, bfloat16; B uint8 packed), GatherBlockQuantized (int4, uint4, uint8), QuantizeLinear /
  DequantizeLinear (int8, uint8, float16 scales).
- TensorRT, "Working with Quantized Types" and "Explicit Quantization" (docs.nvidia.com/
  deeplearning/tensorrt/latest/inference-library/) and the operator pages Quantize.html /
  Dequantize.html: symmetric quantization only (signed INT8, INT4; zero points must be zero);
  INT4 is weight-only; scales strictly positive build-time constants: scalar (per tensor), 1-D
  (per channel) or, for INT4 only, 2-D (blocks); Dequantize input T1 = int8, fp8, int4 (so no
  uint8 and no int32 bias behind a DequantizeLinear); no contrib (com.microsoft) operators.
  "Quantization Schemes" (quantized-types-schemes.html): "INT4 quantization requires per-block
  scales. The supported block sizes are {64, 128}"; INT4 is for weights only. Hence
  `block_sizes` (64, 128) and `channel_bits` (8,): an int4 weight is always blocked, an int8 one
  per channel (or per tensor).
  Weight-only int8 (`weight_only_bits`): "Explicit Quantization" (quantized-types-explicit-
  quantization.html) lets weights be given pre-quantized ("an IDequantizeLayer is required between
  the weights and the linear operator that uses them"), so an int8 per-channel DequantizeLinear of a
  constant feeding a MatMul whose activation is float is a valid strongly typed network whose math
  is exactly the dequantized weight times the float input. What the docs do NOT promise is a fused
  int8 weight-only GEMM kernel: the fused weight-only GEMMs they describe are INT4 blocks ("WoQ is
  available only for INT4 block quantization with GEMM layers", from the TensorRT 10 "Working with
  Quantized Types" page as quoted in a third-party note: the sentence itself was not read on the page
  here); an int8 weight-only layer may run as dequantize + float GEMM, or have its weight folded to
  float at build time (engine size unmeasured here: no TensorRT). NVIDIA's own ModelOpt writes this
  form for TensorRT-family runtimes (modelopt/onnx/quantization/qdq_utils.py: 8-bit layers of its
  mixed int4/int8 mode as unblocked per-channel DequantizeLinear, axis over N).
- ONNX-TensorRT, docs/operators.md (onnx/onnx-tensorrt, the TensorRT 10.15 table): "TensorRT 10.15
  supports operators in the inclusive range of opset 9 to opset 24" (`max_opset` 24); "INT8, INT4,
  FP8 and FP4 are treated as `Quantized Types` in TensorRT, where support is available only through
  quantization from a floating-point type with higher precision", and the per-op types agree: Gather,
  Cast, Reshape, Transpose list no INT8/INT4 (DequantizeLinear reads INT8, FP8, FP4, INT4) — hence
  `quantized_through_dq` (an int8/int4 tensor is read by DequantizeLinear only; an int8 table is
  dequantized, then gathered). Operators marked "N" (`excluded_ops`: DynamicQuantizeLinear,
  MatMulInteger, ConvInteger, QLinearConv, QLinearMatMul, the Sequence/Optional/String ops, …) are
  standard ONNX that TensorRT does not parse.
- ONNX Runtime's CPU int8 GEMMs (MLAS, onnxruntime/core/mlas/lib/platform.cpp, read 2026-12-01):
  on x86 with AVX2 but no VNNI, uint8 × int8 runs `MlasGemmU8S8DispatchAvx2`, whose vpmaddubsw adds
  pairs of products into saturating int16 (255 · 127 · 2 > 32767), while uint8 × uint8 runs an exact
  kernel; with AVX-VNNI or AVX512-VNNI, MLAS sends uint8 × uint8 through the same U8S8 dispatch as
  uint8 × int8 (`MlasPlatformU8S8Overflow` is the test for the difference). Measured here on an AVX2
  EPYC (2026-12-01): MiniLM `w8a8-mixed` held-out cosine / NN 0.9994 / 0.969 with graph optimizations
  off (float math) but 0.99707 / 0.934 fused with int8 weights, and 0.9994 / 0.969 fused with the same
  codes stored as uint8 + 128; the exact kernel is slower there (`w8a8-smoothquant` 0.96× fp32 against
  0.80× with int8 codes, quiet machine, interleaved). Hence `unsigned_int8_weights` for ort-cpu: a
  weight DequantizeLinear reads uint8 codes with zero point 128, exact on every x86 host (speed on
  VNNI hosts expected unchanged, one dispatch; not measured).
- ONNX operator specification (QuantizeLinear/DequantizeLinear-21: int4/uint4 and `block_size`)
  for `portable`: the standard domains only, so DirectML, WebGPU, OpenVINO and other runtimes that
  implement the standard read it. Whole blocks (`whole_blocks`): OpenVINO 2026.4's ONNX frontend
  refuses a DequantizeLinear whose blocked axis is not a multiple of block_size ("cannot be divided
  by block_size", measured here), so portable and tensorrt (conservatively) ask for whole blocks.
"""

from dataclasses import dataclass

from onnxcomp.custom_ops.reference import DOMAIN as CUSTOM_DOMAIN
from onnxcomp.custom_ops.reference import OP_TYPE as CUSTOM_OP
from onnxcomp.errors import OnnxcompError

ANY = None  # an op set of ANY: every operator of the domain's standard (checked with onnx.defs)

# Standard ONNX operators ONNX-TensorRT marks "N" (not supported) in docs/operators.md (TensorRT 10.15).
_TENSORRT_UNSUPPORTED = frozenset(
    {
        "AffineGrid",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "CenterCropPad",
        "Col2Im",
        "Compress",
        "ConcatFromSequence",
        "ConvInteger",
        "DFT",
        "Det",
        "DynamicQuantizeLinear",
        "ImageDecoder",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "MelWeightMatrix",
        "Multinomial",
        "NegativeLogLikelihoodLoss",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QLinearConv",
        "QLinearMatMul",
        "RegexFullMatch",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SoftmaxCrossEntropyLoss",
        "SplitToSequence",
        "StringConcat",
        "StringNormalizer",
        "StringSplit",
        "TfIdfVectorizer",
        "Unique",
    }
)

# com.microsoft ops the ONNX Runtime targets accept: those onnxcomp emits, and the fused ops ORT's
# own optimizers write (all listed for the CPU and CUDA providers in OperatorKernels.md).
_ORT_CONTRIB = frozenset(
    {
        "MatMulNBits",
        "GatherBlockQuantized",
        "QuantizeLinear",
        "DequantizeLinear",
        "Attention",
        "MultiHeadAttention",
        "GroupQueryAttention",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "EmbedLayerNormalization",
        "FastGelu",
        "Gelu",
        "BiasGelu",
        "FusedMatMul",
        "RotaryEmbedding",
        "QuickGelu",
    }
)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    domains: dict  # op domain ("" = ONNX default) -> frozenset of op types, or ANY
    weight_only_formats: tuple[str, ...]  # blockwise formats; the first is the default
    activation_dtypes: tuple[str, ...]  # QuantizeLinear outputs; the first is the default
    weight_dtypes: tuple[str, ...]  # what a DequantizeLinear of a constant may read
    symmetric_only: bool = False  # every zero point 0 (absent or zeros)
    positive_scales: bool = False  # DequantizeLinear/QuantizeLinear scales > 0
    per_tensor_activations: bool = False  # activation Q/DQ scales are scalars
    block_bits: tuple[int, ...] = (4, 8)  # bit widths that may be quantized in blocks
    channel_bits: tuple[int, ...] = (4, 8)  # bit widths a constant may be dequantized unblocked (per channel/tensor)
    weight_only_bits: tuple[int, ...] = (4, 8)  # weight DequantizeLinear into a MatMul/Gemm with a float activation
    block_sizes: tuple[int, ...] = (32, 64, 128)
    block_on_k_axis: bool = False  # a blocked DequantizeLinear feeds MatMul's B [K, N] with axis 0
    whole_blocks: bool = False  # the blocked axis a multiple of the block size (no partial last block)
    fp16: bool = False  # computes in float16 (the convert_fp16 variant is for it)
    excluded_ops: frozenset = frozenset()  # default-domain ops the runtime does not run, though standard
    quantized_through_dq: bool = False  # int8/int4 tensors are read by DequantizeLinear only
    unsigned_int8_weights: bool = False  # int8 QDQ weights stored as uint8 + 128 (zero point 128): same values
    min_opset: int = 13
    max_opset: int | None = None
    verified: str = "ONNX Runtime CPU, on this machine"

    def weight_only_layout(self, bits: int) -> str | None:
        """How a weight-only layer of `bits` is stored here: "blocks" (blocked DequantizeLinear or a
        packed op), "channel" (unblocked int8 DequantizeLinear, one scale per output channel), or None."""
        if bits not in self.weight_only_bits:
            return None
        if bits in self.block_bits:
            return "blocks"
        if bits in self.channel_bits and "qdq" in self.weight_only_formats:
            return "channel"
        return None

    def accepts_op(self, domain: str, op_type: str) -> bool:
        ops = self.domains.get(domain, ())
        if domain in ("", "ai.onnx") and op_type in self.excluded_ops:
            return False
        return ops is ANY or op_type in ops


ORT_CPU = Target(
    "ort-cpu",
    "ONNX Runtime, CPU execution provider (ai.onnxcomp ops need the custom-op library registered)",
    domains={"": ANY, "com.microsoft": _ORT_CONTRIB, CUSTOM_DOMAIN: frozenset({CUSTOM_OP})},
    weight_only_formats=("matmulnbits", "qdq", "custom"),
    activation_dtypes=("uint8", "int8"),
    weight_dtypes=("int8", "uint8", "int4", "uint4", "int32"),
    unsigned_int8_weights=True,
)

ORT_CUDA = Target(
    "ort-cuda",
    "ONNX Runtime, CUDA execution provider (MatMulNBits with fp16/fp32 activations, DQ int4 blocks, int8 QDQ)",
    domains={"": ANY, "com.microsoft": _ORT_CONTRIB, CUSTOM_DOMAIN: frozenset({CUSTOM_OP})},
    weight_only_formats=("matmulnbits", "qdq", "custom"),
    activation_dtypes=("int8", "uint8"),
    weight_dtypes=("int8", "uint8", "int4", "uint4", "int32"),
    fp16=True,
    verified="conformance check only (no GPU on this machine)",
)

TENSORRT = Target(
    "tensorrt",
    "TensorRT 10/11 explicit quantization: symmetric int8 Q/DQ, int4 weight-only DequantizeLinear blocks, "
    "int8 weight-only per channel",
    domains={"": ANY},
    weight_only_formats=("qdq",),
    activation_dtypes=("int8",),
    weight_dtypes=("int8", "int4"),
    symmetric_only=True,
    positive_scales=True,
    per_tensor_activations=True,
    block_bits=(4,),
    block_sizes=(64, 128),
    channel_bits=(8,),
    weight_only_bits=(4, 8),
    block_on_k_axis=True,
    whole_blocks=True,
    fp16=True,
    excluded_ops=_TENSORRT_UNSUPPORTED,
    quantized_through_dq=True,
    min_opset=21,
    max_opset=24,
    verified="conformance check; QDQ math run in ONNX Runtime CPU and OpenVINO (no TensorRT here)",
)

PORTABLE = Target(
    "portable",
    "standard ONNX only (no contrib or custom domains): int8 QDQ and opset-21 int4 DequantizeLinear blocks",
    domains={"": ANY},
    weight_only_formats=("qdq",),
    activation_dtypes=("uint8", "int8"),
    weight_dtypes=("int8", "uint8", "int4", "uint4", "int32"),
    whole_blocks=True,
    fp16=True,
    min_opset=21,
    max_opset=21,
    verified="ONNX Runtime CPU and OpenVINO, on this machine",
)

TARGETS: dict[str, Target] = {t.name: t for t in (ORT_CPU, ORT_CUDA, TENSORRT, PORTABLE)}
DEFAULT_TARGET = ORT_CPU.name


def target_named(name: "str | Target | None") -> Target:
    """The registered target `name` (None: the default); an unknown name is one error line."""
    if isinstance(name, Target):
        return name
    if name is None:
        return TARGETS[DEFAULT_TARGET]
    if name not in TARGETS:
        raise OnnxcompError(f"unknown target {name!r} (targets: {', '.join(TARGETS)})")
    return TARGETS[name]
