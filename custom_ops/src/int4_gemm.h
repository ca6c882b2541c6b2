// MatMulInt4: Y[M, N] = A[M, K] . dequant(B)^T (+ bias[N]); see custom_ops/README.md for the contract.
#pragma once
#include <stdint.h>
#include <stddef.h>

// Element types use ONNX's TensorProto codes: 1 float32, 10 float16, 16 bfloat16.
enum { I4_F32 = 1, I4_F16 = 10, I4_BF16 = 16 };

typedef struct Int4GemmArgs {
  int dtype;              // dtype of A, bias and Y
  int scale_dtype;        // dtype of scales: dtype or float32
  const void* A;          // [M, K]
  const uint8_t* B;       // [N, n_blocks, group/2]
  const void* scales;     // [N, n_blocks]
  const uint8_t* zero_points;  // [N, ceil(n_blocks/2)] or NULL (symmetric, zero point 8)
  const void* bias;       // [N] or NULL
  void* Y;                // [M, N]
  int64_t M, N, K, group;
} Int4GemmArgs;

#ifdef __cplusplus
extern "C" {
#endif
// Checks the arguments that do not depend on the device. Returns NULL or a static message.
const char* onnxcomp_int4_check_args(const Int4GemmArgs* a);
// CPU kernel. Returns NULL on success, else an error message (static storage).
const char* onnxcomp_int4_gemm_cpu(const Int4GemmArgs* a);
// Runs fn(usr, i) for i in [0, total), possibly in parallel (e.g. ONNX Runtime's intra-op pool).
typedef void (*Int4ParallelFor)(void* pf_ctx, void (*fn)(void* usr, size_t i), size_t total, void* usr);
// CPU kernel parallelized with `pf` (NULL: its own std::threads for large problems).
const char* onnxcomp_int4_gemm_cpu_par(const Int4GemmArgs* a, Int4ParallelFor pf, void* pf_ctx);
// CUDA kernels (only in a library built with nvcc). `stream` is a cudaStream_t. Returns NULL on
// success, else a message in a thread-local buffer (launch or argument error).
const char* onnxcomp_int4_gemm_cuda(const Int4GemmArgs* a, void* stream);
// 1 when the library was built with the CUDA kernels.
int onnxcomp_int4_has_cuda(void);
#ifdef __cplusplus
}
#endif
