// CUDA kernels of MatMulInt4 (contract: custom_ops/README.md).
//
//  * skinny path, M <= 8 (gemv_kernel): one 128-thread block per output column n, its four warps
//    split K (split-K inside the block, reduced through shared memory, so no workspace and no
//    atomics); each thread streams 16-byte chunks of the weight row (32 nibbles = 32 k values,
//    one scale/zero point since group_size >= 32), dequantizes them in registers and multiplies
//    them by up to 8 rows of A; every weight byte is read exactly once. fp32 accumulation.
//  * tensor-core path, M > 8, fp16/bf16 A (mma_kernel): 64x64x32 tiles, the weight tile is
//    dequantized into shared memory as fp16/bf16 and multiplied with WMMA (mma.sync m16n16k16
//    underneath) with fp32 accumulators; bias and conversion in the epilogue.
//  * M > 8 with fp32 A (simt_kernel): fp32 FMA tiles (tensor cores would need tf32 rounding).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <cstdio>

#include "int4_gemm.h"

namespace {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float zero_point(const uint8_t* zp, int64_t n, int zb, int b) {
  if (!zp) return 8.0f;
  const uint8_t z = zp[n * zb + (b >> 1)];
  return static_cast<float>((b & 1) ? (z >> 4) : (z & 15));
}

// Loads A[k0 .. k0+31] of one row as floats; zero beyond K.
template <typename T>
__device__ __forceinline__ void load_a32(const T* row, int k0, int K, bool vec, float out[32]) {
  if (vec && k0 + 32 <= K) {
    const uint4* p = reinterpret_cast<const uint4*>(row + k0);
    constexpr int per = 16 / sizeof(T);
#pragma unroll
    for (int i = 0; i < 32 / per; ++i) {
      uint4 v = __ldg(p + i);
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int j = 0; j < per; ++j) out[i * per + j] = to_f(e[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 32; ++j) out[j] = (k0 + j < K) ? to_f(row[k0 + j]) : 0.0f;
  }
}

template <typename T, typename S, int MT>
__global__ void __launch_bounds__(128) gemv_kernel(const T* __restrict__ A, const uint8_t* __restrict__ B,
                                                   const S* __restrict__ scales, const uint8_t* __restrict__ zp,
                                                   const T* __restrict__ bias, T* __restrict__ Y, int M, int N, int K,
                                                   int group, int nb, bool a_vec) {
  const int n = blockIdx.x;
  const int chunks = nb * (group / 32);
  const int zb = (nb + 1) / 2;
  const uint4* brow = reinterpret_cast<const uint4*>(B + static_cast<int64_t>(n) * nb * (group / 2));
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0.0f;

  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    const uint4 w = __ldcs(brow + c);  // streamed once: evict-first
    const int k0 = c * 32;
    const int b = k0 / group;
    const float s = to_f(scales[static_cast<int64_t>(n) * nb + b]);
    const float z = zero_point(zp, n, zb, b);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    float wv[32];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) wv[i * 8 + j] = (static_cast<float>((words[i] >> (4 * j)) & 15u) - z) * s;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < M) {
        float a[32];
        load_a32(A + static_cast<int64_t>(m) * K, k0, K, a_vec, a);
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) sum = fmaf(a[j], wv[j], sum);
        acc[m] += sum;
      }
    }
  }
  __shared__ float part[4][MT];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) part[warp][m] = v;
  }
  __syncthreads();
  if (threadIdx.x < MT && static_cast<int>(threadIdx.x) < M) {
    const int m = threadIdx.x;
    float v = part[0][m] + part[1][m] + part[2][m] + part[3][m];
    if (bias) v += to_f(bias[n]);
    Y[static_cast<int64_t>(m) * N + n] = from_f<T>(v);
  }
}

constexpr int TM = 64, TN = 64, TK = 32;

// Dequantizes B[n0 .. n0+63][k0 .. k0+31] into sh[n][k] (row stride ld); 128 threads, 16 values each.
template <typename T, typename S, typename Out>
__device__ __forceinline__ void dequant_tile(const uint8_t* B, const S* scales, const uint8_t* zp, int N, int nb,
                                             int group, int n0, int k0, Out* sh, int ld) {
  const int t = threadIdx.x, r = t >> 1, half = t & 1, n = n0 + r;
  float v[16];
  if (n < N) {
    const int b = k0 / group;
    const uint2 w = *reinterpret_cast<const uint2*>(B + static_cast<int64_t>(n) * nb * (group / 2) + k0 / 2 + half * 8);
    const float s = to_f(scales[static_cast<int64_t>(n) * nb + b]);
    const float z = zero_point(zp, n, (nb + 1) / 2, b);
    const uint32_t words[2] = {w.x, w.y};
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) v[i * 8 + j] = (static_cast<float>((words[i] >> (4 * j)) & 15u) - z) * s;
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = 0.0f;
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) sh[r * ld + half * 16 + j] = from_f<Out>(v[j]);
}

template <typename T, typename S>
__global__ void __launch_bounds__(128) mma_kernel(const T* __restrict__ A, const uint8_t* __restrict__ B,
                                                  const S* __restrict__ scales, const uint8_t* __restrict__ zp,
                                                  const T* __restrict__ bias, T* __restrict__ Y, int M, int N, int K,
                                                  int group, int nb) {
  using namespace nvcuda;
  constexpr int LD = TK + 8;
  __shared__ __align__(32) T As[TM * LD];
  __shared__ __align__(32) T Bs[TN * LD];
  __shared__ __align__(32) float Cs[TM * (TN + 4)];
  const int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;
  const int warp = threadIdx.x >> 5, wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int kpad = nb * group;
  for (int k0 = 0; k0 < kpad; k0 += TK) {
#pragma unroll
    for (int i = 0; i < (TM * TK) / 128; ++i) {
      const int idx = threadIdx.x + i * 128, r = idx / TK, c = idx % TK;
      const int m = m0 + r, k = k0 + c;
      As[r * LD + c] = (m < M && k < K) ? A[static_cast<int64_t>(m) * K + k] : from_f<T>(0.0f);
    }
    dequant_tile<T, S, T>(B, scales, zp, N, nb, group, n0, k0, Bs, LD);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + (wm + 16 * i) * LD + kk, LD);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], Bs + (wn + 16 * j) * LD + kk, LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm + 16 * i) * (TN + 4) + wn + 16 * j, acc[i][j], TN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int idx = threadIdx.x; idx < TM * TN; idx += 128) {
    const int r = idx / TN, c = idx % TN, m = m0 + r, n = n0 + c;
    if (m < M && n < N) {
      float v = Cs[r * (TN + 4) + c];
      if (bias) v += to_f(bias[n]);
      Y[static_cast<int64_t>(m) * N + n] = from_f<T>(v);
    }
  }
}

// fp32 A, M > 8: 64x64 tile, 256 threads, 4x4 outputs each.
template <typename S>
__global__ void __launch_bounds__(256) simt_kernel(const float* __restrict__ A, const uint8_t* __restrict__ B,
                                                   const S* __restrict__ scales, const uint8_t* __restrict__ zp,
                                                   const float* __restrict__ bias, float* __restrict__ Y, int M, int N,
                                                   int K, int group, int nb) {
  __shared__ float As[TK][TM + 1];
  __shared__ float Bs[TK][TN + 1];
  const int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  float acc[4][4] = {};
  const int kpad = nb * group;
  for (int k0 = 0; k0 < kpad; k0 += TK) {
#pragma unroll
    for (int i = 0; i < (TM * TK) / 256; ++i) {
      const int idx = threadIdx.x + i * 256, r = idx / TK, c = idx % TK;
      const int m = m0 + r, k = k0 + c;
      As[c][r] = (m < M && k < K) ? A[static_cast<int64_t>(m) * K + k] : 0.0f;
    }
    {
      const int r = threadIdx.x >> 2, q = threadIdx.x & 3, n = n0 + r;
      float v[8];
      if (n < N) {
        const int b = k0 / group;
        const uint32_t w = *reinterpret_cast<const uint32_t*>(B + static_cast<int64_t>(n) * nb * (group / 2) + k0 / 2 + q * 4);
        const float s = to_f(scales[static_cast<int64_t>(n) * nb + b]);
        const float z = zero_point(zp, n, (nb + 1) / 2, b);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = (static_cast<float>((w >> (4 * j)) & 15u) - z) * s;
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) Bs[q * 8 + j][r] = v[j];
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < TK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) Y[static_cast<int64_t>(m) * N + n] = acc[i][j] + (bias ? bias[n] : 0.0f);
    }
}

thread_local char g_msg[512];

const char* fail(const char* what, cudaError_t e) {
  snprintf(g_msg, sizeof(g_msg), "MatMulInt4 CUDA: %s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
  return g_msg;
}

bool aligned(const void* p, size_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

const char* check_device_ptr(const void* p, const char* name) {
  if (!p) return nullptr;
  cudaPointerAttributes attr;
  cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) return fail(name, e);
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    snprintf(g_msg, sizeof(g_msg), "MatMulInt4 CUDA: input '%s' is not in device memory", name);
    return g_msg;
  }
  return nullptr;
}

template <typename T, typename S>
const char* launch(const Int4GemmArgs& a, cudaStream_t st) {
  const T* A = static_cast<const T*>(a.A);
  const S* Sc = static_cast<const S*>(a.scales);
  const T* bias = static_cast<const T*>(a.bias);
  T* Y = static_cast<T*>(a.Y);
  const int M = static_cast<int>(a.M), N = static_cast<int>(a.N), K = static_cast<int>(a.K), g = static_cast<int>(a.group);
  const int nb = (K + g - 1) / g;
  if (M <= 8) {
    const bool a_vec = aligned(A, 16) && (static_cast<size_t>(K) * sizeof(T)) % 16 == 0;
    dim3 grid(N), block(128);
    switch (M) {
#define CASE(MT) case MT: gemv_kernel<T, S, MT><<<grid, block, 0, st>>>(A, a.B, Sc, a.zero_points, bias, Y, M, N, K, g, nb, a_vec); break;
      CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
      default: break;
    }
  } else {
    dim3 grid((N + TN - 1) / TN, (M + TM - 1) / TM);
    if constexpr (sizeof(T) == 2) {
      mma_kernel<T, S><<<grid, 128, 0, st>>>(A, a.B, Sc, a.zero_points, bias, Y, M, N, K, g, nb);
    } else {
      simt_kernel<S><<<grid, 256, 0, st>>>(reinterpret_cast<const float*>(A), a.B, Sc, a.zero_points,
                                          reinterpret_cast<const float*>(bias), reinterpret_cast<float*>(Y), M, N, K, g, nb);
    }
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return fail("kernel launch", e);
  return nullptr;
}

}  // namespace

extern "C" int onnxcomp_int4_has_cuda(void) { return 1; }

extern "C" const char* onnxcomp_int4_gemm_cuda(const Int4GemmArgs* args, void* stream) {
  if (const char* e = onnxcomp_int4_check_args(args)) return e;
  const Int4GemmArgs& a = *args;
  if (a.M == 0) return nullptr;
  if (a.M > static_cast<int64_t>(65535) * TM || a.N > 0x7fffffff || a.K > 0x7fffffff / 2)
    return "MatMulInt4 CUDA: problem too large for one launch (M <= 4194240, N, 2K < 2^31)";
  const size_t es = a.dtype == I4_F32 ? 4 : 2, ss = a.scale_dtype == I4_F32 ? 4 : 2;
  if (!aligned(a.B, 16)) return "MatMulInt4 CUDA: input 'B' must be 16-byte aligned";
  if (!aligned(a.A, es) || !aligned(a.Y, es) || (a.bias && !aligned(a.bias, es)))
    return "MatMulInt4 CUDA: A, bias and Y must be aligned to their element size";
  if (!aligned(a.scales, ss)) return "MatMulInt4 CUDA: scales must be aligned to their element size";
  const char* names[6] = {"A", "B", "scales", "zero_points", "bias", "Y"};
  const void* ptrs[6] = {a.A, a.B, a.scales, a.zero_points, a.bias, a.Y};
  for (int i = 0; i < 6; ++i)
    if (const char* e = check_device_ptr(ptrs[i], names[i])) return e;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (a.dtype == I4_F32) return launch<float, float>(a, st);
  if (a.dtype == I4_F16) return a.scale_dtype == I4_F32 ? launch<__half, float>(a, st) : launch<__half, __half>(a, st);
  return a.scale_dtype == I4_F32 ? launch<__nv_bfloat16, float>(a, st) : launch<__nv_bfloat16, __nv_bfloat16>(a, st);
}
