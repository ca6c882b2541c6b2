// CPU kernel of MatMulInt4: each weight row is dequantized once into a float buffer, then dotted
// with every row of A (fp32 accumulation; the inner loop is written for auto-vectorization).
#include "int4_gemm.h"
#include "numeric.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

extern "C" const char* onnxcomp_int4_check_args(const Int4GemmArgs* a) {
  if (a->dtype != I4_F32 && a->dtype != I4_F16 && a->dtype != I4_BF16)
    return "MatMulInt4: A must be float32, float16 or bfloat16";
  if (a->scale_dtype != a->dtype && a->scale_dtype != I4_F32)
    return "MatMulInt4: scales must have the dtype of A or float32";
  if (a->group != 32 && a->group != 64 && a->group != 128)
    return "MatMulInt4: group_size must be 32, 64 or 128";
  if (a->K <= 0 || a->N <= 0 || a->M < 0) return "MatMulInt4: K and N must be positive";
  return nullptr;
}

namespace {

inline float load_f(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case I4_F16: return onnxcomp::half_to_float(static_cast<const uint16_t*>(p)[i]);
    case I4_BF16: return onnxcomp::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store_f(void* p, int dtype, int64_t i, float v) {
  switch (dtype) {
    case I4_F16: static_cast<uint16_t*>(p)[i] = onnxcomp::float_to_half(v); break;
    case I4_BF16: static_cast<uint16_t*>(p)[i] = onnxcomp::float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

float dot(const float* x, const float* w, int64_t K) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[k + j] * w[k + j];
  float s = 0;
  for (; k < K; ++k) s += x[k] * w[k];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void rows(const Int4GemmArgs& a, const float* A, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, nb = (K + g - 1) / g, zb = (nb + 1) / 2;
  std::vector<float> w(static_cast<size_t>(nb * g));
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* brow = a.B + n * nb * (g / 2);
    for (int64_t b = 0; b < nb; ++b) {
      const float s = load_f(a.scales, a.scale_dtype, n * nb + b);
      float zp = 8.0f;
      if (a.zero_points) {
        const uint8_t z = a.zero_points[n * zb + b / 2];
        zp = static_cast<float>((b & 1) ? (z >> 4) : (z & 15));
      }
      const uint8_t* blk = brow + b * (g / 2);
      float* wb = w.data() + b * g;
      for (int64_t i = 0; i < g / 2; ++i) {
        wb[2 * i] = (static_cast<float>(blk[i] & 15) - zp) * s;
        wb[2 * i + 1] = (static_cast<float>(blk[i] >> 4) - zp) * s;
      }
    }
    const float bias = a.bias ? load_f(a.bias, a.dtype, n) : 0.0f;
    for (int64_t m = 0; m < a.M; ++m)
      store_f(a.Y, a.dtype, m * a.N + n, dot(A + m * K, w.data(), K) + bias);
  }
}

}  // namespace

extern "C" const char* onnxcomp_int4_gemm_cpu(const Int4GemmArgs* args) {
  if (const char* e = onnxcomp_int4_check_args(args)) return e;
  const Int4GemmArgs& a = *args;
  if (a.M == 0) return nullptr;
  std::vector<float> Af;
  const float* A = static_cast<const float*>(a.A);
  if (a.dtype != I4_F32) {
    Af.resize(static_cast<size_t>(a.M * a.K));
    for (int64_t i = 0; i < a.M * a.K; ++i) Af[i] = load_f(a.A, a.dtype, i);
    A = Af.data();
  }
  const double work = static_cast<double>(a.M + 4) * a.N * a.K;
  int threads = static_cast<int>(std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), a.N));
  if (work < 4e6) threads = 1;
  if (threads == 1) {
    rows(a, A, 0, a.N);
    return nullptr;
  }
  std::vector<std::thread> pool;
  const int64_t step = (a.N + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t n0 = t * step, n1 = std::min(a.N, n0 + step);
    if (n0 < n1) pool.emplace_back(rows, std::cref(a), A, n0, n1);
  }
  for (auto& th : pool) th.join();
  return nullptr;
}
