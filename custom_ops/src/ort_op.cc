// ONNX Runtime custom-op library for ai.onnxcomp::MatMulInt4 (contract: custom_ops/README.md).
// Registers one OrtCustomOp per (execution provider, dtype of A, dtype of scales); ONNX Runtime
// merges ops of the same name into one schema and picks the kernel by the input types.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "int4_gemm.h"
#include "ort_c_api_min.h"

#if defined(_WIN32)
#define ONNXCOMP_EXPORT __declspec(dllexport)
#else
#define ONNXCOMP_EXPORT __attribute__((visibility("default")))
#endif

namespace {

const OrtApi* g_api = nullptr;
bool g_parallel_for = false;  // slot 274 verified usable (see RegisterCustomOps)

struct PfCtx {
  OrtKernelContext* ctx;
};

// Runs the CPU kernel's tasks on ONNX Runtime's intra-op thread pool (no threads of our own
// competing with ORT's spinning workers); serially if the call fails.
void ort_parallel_for(void* pf_ctx, void (*fn)(void*, size_t), size_t total, void* usr) {
  OrtKernelContext* ctx = static_cast<PfCtx*>(pf_ctx)->ctx;
  if (OrtStatus* s = g_api->KernelContext_ParallelFor(ctx, fn, total, 0, usr)) {
    g_api->ReleaseStatus(s);
    for (size_t i = 0; i < total; ++i) fn(usr, i);
  }
}
constexpr const char* kDomain = "ai.onnxcomp";
constexpr const char* kOpName = "MatMulInt4";

struct OpDef {
  OrtCustomOp base;  // first member: ORT hands us back this pointer
  const char* ep;
  bool cuda;
  ONNXTensorElementDataType a_type;
  ONNXTensorElementDataType s_type;
};

struct Kernel {
  const OpDef* def;
  int64_t K, N, bits, group;
};

OrtStatus* err(const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return g_api->CreateStatus(code, msg.c_str());
}

const char* type_name(int t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    default: return "another type";
  }
}

#define ORT_TRY(expr)                   \
  do {                                  \
    if (OrtStatus* _s = (expr)) return _s; \
  } while (0)

struct TensorView {
  const OrtValue* value = nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  void* data = nullptr;
};

OrtStatus* view(const OrtValue* v, TensorView* out) {
  out->value = v;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  ORT_TRY(g_api->GetTensorTypeAndShape(v, &info));
  size_t rank = 0;
  OrtStatus* s = g_api->GetTensorElementType(info, &out->type);
  if (!s) s = g_api->GetDimensionsCount(info, &rank);
  if (!s) {
    out->shape.resize(rank);
    s = g_api->GetDimensions(info, out->shape.data(), rank);
  }
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  if (s) return s;
  return g_api->GetTensorMutableData(const_cast<OrtValue*>(v), &out->data);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

OrtStatus* expect_shape(const char* name, const TensorView& t, const std::vector<int64_t>& want) {
  if (t.shape != want)
    return err(std::string("MatMulInt4: input '") + name + "' has shape " + shape_str(t.shape) +
               ", expected " + shape_str(want) + " from attributes K, N, group_size");
  return nullptr;
}

OrtStatus* compute(void* op_kernel, OrtKernelContext* ctx) {
  const Kernel& k = *static_cast<Kernel*>(op_kernel);
  size_t n_inputs = 0;
  ORT_TRY(g_api->KernelContext_GetInputCount(ctx, &n_inputs));
  const OrtValue* vals[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  for (size_t i = 0; i < n_inputs && i < 5; ++i) ORT_TRY(g_api->KernelContext_GetInput(ctx, i, &vals[i]));
  if (!vals[0] || !vals[1] || !vals[2]) return err("MatMulInt4: inputs A, B and scales are required");
  TensorView A, B, S, Z, bias;
  ORT_TRY(view(vals[0], &A));
  ORT_TRY(view(vals[1], &B));
  ORT_TRY(view(vals[2], &S));
  if (vals[3]) ORT_TRY(view(vals[3], &Z));
  if (vals[4]) ORT_TRY(view(vals[4], &bias));

  const int64_t K = k.K, N = k.N, g = k.group, nb = (K + g - 1) / g;
  if (A.shape.empty() || A.shape.back() != K)
    return err("MatMulInt4: input 'A' has shape " + shape_str(A.shape) + ", its last dimension must be K=" +
               std::to_string(K));
  if (B.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
    return err(std::string("MatMulInt4: input 'B' must be uint8, got ") + type_name(B.type));
  ORT_TRY(expect_shape("B", B, {N, nb, g / 2}));
  if (S.type != A.type && S.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return err(std::string("MatMulInt4: input 'scales' must be ") + type_name(A.type) + " or float32, got " +
               type_name(S.type));
  ORT_TRY(expect_shape("scales", S, {N, nb}));
  if (vals[3]) {
    if (Z.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
      return err(std::string("MatMulInt4: input 'zero_points' must be uint8, got ") + type_name(Z.type));
    ORT_TRY(expect_shape("zero_points", Z, {N, (nb + 1) / 2}));
  }
  if (vals[4]) {
    if (bias.type != A.type)
      return err(std::string("MatMulInt4: input 'bias' must be ") + type_name(A.type) + ", got " + type_name(bias.type));
    ORT_TRY(expect_shape("bias", bias, {N}));
  }
  int64_t M = 1;
  for (size_t i = 0; i + 1 < A.shape.size(); ++i) M *= A.shape[i];
  std::vector<int64_t> yshape(A.shape);
  yshape.back() = N;
  OrtValue* Yv = nullptr;
  ORT_TRY(g_api->KernelContext_GetOutput(ctx, 0, yshape.data(), yshape.size(), &Yv));
  void* Y = nullptr;
  ORT_TRY(g_api->GetTensorMutableData(Yv, &Y));

  Int4GemmArgs args;
  args.dtype = A.type;
  args.scale_dtype = S.type;
  args.A = A.data;
  args.B = static_cast<const uint8_t*>(B.data);
  args.scales = S.data;
  args.zero_points = vals[3] ? static_cast<const uint8_t*>(Z.data) : nullptr;
  args.bias = vals[4] ? bias.data : nullptr;
  args.Y = Y;
  args.M = M;
  args.N = N;
  args.K = K;
  args.group = g;

  void* stream = nullptr;
  ORT_TRY(g_api->KernelContext_GetGPUComputeStream(ctx, &stream));
  const char* e = nullptr;
  if (k.def->cuda) {
    e = onnxcomp_int4_gemm_cuda(&args, stream);
  } else {
    // A CPU kernel has no compute stream; a non-null one would mean the OrtApi slot table of
    // ort_c_api_min.h is misaligned with the runtime's, so refuse rather than compute.
    if (stream != nullptr) return err("MatMulInt4: OrtApi ABI check failed (CPU kernel got a GPU stream)", ORT_FAIL);
    PfCtx pfc{ctx};
    e = g_parallel_for ? onnxcomp_int4_gemm_cpu_par(&args, ort_parallel_for, &pfc) : onnxcomp_int4_gemm_cpu(&args);
  }
  if (e) return err(e, ORT_RUNTIME_EXCEPTION);
  return nullptr;
}

OrtStatus* create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out) {
  const OpDef* def = reinterpret_cast<const OpDef*>(op);
  Kernel* k = new Kernel{def, 0, 0, 0, 0};
  const char* names[4] = {"K", "N", "bits", "group_size"};
  int64_t* dst[4] = {&k->K, &k->N, &k->bits, &k->group};
  for (int i = 0; i < 4; ++i) {
    if (OrtStatus* s = api->KernelInfoGetAttribute_int64(info, names[i], dst[i])) {
      api->ReleaseStatus(s);
      delete k;
      return err(std::string("MatMulInt4: required int attribute '") + names[i] + "' is missing");
    }
  }
  std::string bad;
  if (k->bits != 4) bad = "MatMulInt4: attribute bits=" + std::to_string(k->bits) + " is not supported (must be 4)";
  else if (k->group != 32 && k->group != 64 && k->group != 128)
    bad = "MatMulInt4: attribute group_size=" + std::to_string(k->group) + " is not supported (32, 64 or 128)";
  else if (k->K <= 0 || k->N <= 0)
    bad = "MatMulInt4: attributes K and N must be positive";
  if (!bad.empty()) {
    delete k;
    return err(bad);
  }
  *out = k;
  return nullptr;
}

void destroy_kernel(void* k) { delete static_cast<Kernel*>(k); }
const char* get_name(const OrtCustomOp*) { return kOpName; }
const char* get_ep(const OrtCustomOp* op) { return reinterpret_cast<const OpDef*>(op)->ep; }
size_t input_count(const OrtCustomOp*) { return 5; }
size_t output_count(const OrtCustomOp*) { return 1; }
ONNXTensorElementDataType input_type(const OrtCustomOp* op, size_t i) {
  const OpDef* d = reinterpret_cast<const OpDef*>(op);
  switch (i) {
    case 0: case 4: return d->a_type;
    case 2: return d->s_type;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
}
ONNXTensorElementDataType output_type(const OrtCustomOp* op, size_t) {
  return reinterpret_cast<const OpDef*>(op)->a_type;
}
OrtCustomOpInputOutputCharacteristic input_char(const OrtCustomOp*, size_t i) {
  return i >= 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}
OrtCustomOpInputOutputCharacteristic output_char(const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; }
OrtMemType input_mem(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int one(const OrtCustomOp*) { return 1; }
int zero(const OrtCustomOp*) { return 0; }
int start_version(const OrtCustomOp*) { return 1; }
int end_version(const OrtCustomOp*) { return INT_MAX; }

OpDef make_op(const char* ep, bool cuda, ONNXTensorElementDataType a, ONNXTensorElementDataType s) {
  OpDef d;
  memset(&d, 0, sizeof(d));
  OrtCustomOp& o = d.base;
  o.version = ONNXCOMP_CUSTOM_OP_VERSION;
  o.CreateKernel = nullptr;  // V2 entry points are used (version >= 16)
  o.GetName = get_name;
  o.GetExecutionProviderType = get_ep;
  o.GetInputType = input_type;
  o.GetInputTypeCount = input_count;
  o.GetOutputType = output_type;
  o.GetOutputTypeCount = output_count;
  o.KernelCompute = nullptr;
  o.KernelDestroy = destroy_kernel;
  o.GetInputCharacteristic = input_char;
  o.GetOutputCharacteristic = output_char;
  o.GetInputMemoryType = input_mem;
  o.GetVariadicInputMinArity = one;
  o.GetVariadicInputHomogeneity = zero;
  o.GetVariadicOutputMinArity = one;
  o.GetVariadicOutputHomogeneity = zero;
  o.CreateKernelV2 = create_kernel;
  o.KernelComputeV2 = compute;
  o.InferOutputShapeFn = nullptr;
  o.GetStartVersion = start_version;
  o.GetEndVersion = end_version;
  d.ep = ep;
  d.cuda = cuda;
  d.a_type = a;
  d.s_type = s;
  return d;
}

std::vector<OpDef>& ops() {
  static std::vector<OpDef> v = [] {
    std::vector<OpDef> r;
    const auto F32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, F16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
               BF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    const ONNXTensorElementDataType pairs[5][2] = {{F32, F32}, {F16, F16}, {F16, F32}, {BF16, BF16}, {BF16, F32}};
    for (auto& p : pairs) r.push_back(make_op("CPUExecutionProvider", false, p[0], p[1]));
    if (onnxcomp_int4_has_cuda())
      for (auto& p : pairs) r.push_back(make_op("CUDAExecutionProvider", true, p[0], p[1]));
    return r;
  }();
  return v;
}

}  // namespace

extern "C" ONNXCOMP_EXPORT OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ONNXCOMP_ORT_API_VERSION);
  if (!api) {
    fprintf(stderr, "onnxcomp MatMulInt4: onnxruntime %s does not provide C API version %d (need >= 1.18)\n",
            api_base->GetVersionString(), ONNXCOMP_ORT_API_VERSION);
    return nullptr;  // cannot even create a status without an OrtApi; the session then fails on the unknown op
  }
  g_api = api;
  // Cross-check of our slot table beyond the part every run exercises: slot 254 must be
  // GetBuildInfoString (safe to call, recognizable answer) before we trust slot 274 (ParallelFor).
  const char* build_info = api->GetBuildInfoString();
  g_parallel_for = build_info != nullptr && strncmp(build_info, "ORT Build Info", 14) == 0;
  // One domain object per call: ORT keeps a pointer to it for the life of the session options.
  OrtCustomOpDomain* domain = nullptr;
  ORT_TRY(api->CreateCustomOpDomain(kDomain, &domain));
  for (OpDef& d : ops()) ORT_TRY(api->CustomOpDomain_Add(domain, &d.base));
  return api->AddCustomOpDomain(options, domain);
}

#ifndef ONNXCOMP_WITH_CUDA
extern "C" const char* onnxcomp_int4_gemm_cuda(const Int4GemmArgs*, void*) {
  return "MatMulInt4: this library was built without CUDA";
}
extern "C" int onnxcomp_int4_has_cuda(void) { return 0; }
#endif

// Plain C entry point for callers other than ONNX Runtime (ctypes in the GPU tests and the
// benchmark, the TensorRT plugin): device 0 = CPU (host pointers), 1 = CUDA (device pointers,
// `stream` a cudaStream_t or NULL). Returns NULL on success or an error message.
extern "C" ONNXCOMP_EXPORT const char* onnxcomp_matmul_int4(int device, int dtype, int scale_dtype, const void* A,
                                                            const void* B, const void* scales, const void* zero_points,
                                                            const void* bias, void* Y, int64_t M, int64_t N, int64_t K,
                                                            int64_t group_size, void* stream) {
  Int4GemmArgs a;
  a.dtype = dtype;
  a.scale_dtype = scale_dtype;
  a.A = A;
  a.B = static_cast<const uint8_t*>(B);
  a.scales = scales;
  a.zero_points = static_cast<const uint8_t*>(zero_points);
  a.bias = bias;
  a.Y = Y;
  a.M = M;
  a.N = N;
  a.K = K;
  a.group = group_size;
  if (!A || !B || !scales || !Y) return "MatMulInt4: A, B, scales and Y must not be NULL";
  if (device == 0) return onnxcomp_int4_gemm_cpu(&a);
  if (device == 1) return onnxcomp_int4_gemm_cuda(&a, stream);
  return "MatMulInt4: device must be 0 (CPU) or 1 (CUDA)";
}

extern "C" ONNXCOMP_EXPORT int onnxcomp_matmul_int4_has_cuda(void) { return onnxcomp_int4_has_cuda(); }

// 1 once RegisterCustomOps verified the OrtApi table far enough to run on ORT's thread pool.
extern "C" ONNXCOMP_EXPORT int onnxcomp_matmul_int4_uses_ort_threads(void) { return g_parallel_for ? 1 : 0; }
