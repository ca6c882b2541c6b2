// CPU kernel of MatMulInt4: weight rows are dequantized four at a time into a float buffer (AVX2
// when the build machine has it); M >= 24: 16 dequantized rows packed k-major, 6x16 register tiles
// (AVX2/FMA); 4 < M < 24 and the portable build: a 4x2 register tile of 8-wide dot products; for M <= 4 nibbles are widened and multiplied with A directly, the
// scale and zero point applied once per group. fp32 accumulation. Portable scalar code without AVX2/FMA.
#include "int4_gemm.h"
#include "numeric.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

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

// Dequantizes weight row n into w[0 .. n_blocks*g) (padding positions k >= K included: A is zero there).
void dequant_row(const Int4GemmArgs& a, int64_t n, float* w) {
  const int64_t g = a.group, nb = (a.K + g - 1) / g, zb = (nb + 1) / 2;
  const uint8_t* brow = a.B + n * nb * (g / 2);
  for (int64_t b = 0; b < nb; ++b) {
    const float s = load_f(a.scales, a.scale_dtype, n * nb + b);
    float zp = 8.0f;
    if (a.zero_points) {
      const uint8_t z = a.zero_points[n * zb + b / 2];
      zp = static_cast<float>((b & 1) ? (z >> 4) : (z & 15));
    }
    const uint8_t* blk = brow + b * (g / 2);
    float* wb = w + b * g;
#if defined(__AVX2__)
    const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(zp);
    const __m128i mask = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < g / 2; i += 16) {  // 16 bytes = 32 weights
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + i));
      const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
      const __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);  // k order
      const __m128i parts[4] = {v0, _mm_srli_si128(v0, 8), v1, _mm_srli_si128(v1, 8)};
      for (int j = 0; j < 4; ++j) {
        const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[j]));
        _mm256_storeu_ps(wb + 2 * i + 8 * j, _mm256_mul_ps(_mm256_sub_ps(q, zv), sv));
      }
    }
#else
    for (int64_t i = 0; i < g / 2; ++i) {
      wb[2 * i] = (static_cast<float>(blk[i] & 15) - zp) * s;
      wb[2 * i + 1] = (static_cast<float>(blk[i] >> 4) - zp) * s;
    }
#endif
  }
}

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
#endif

// out[r][j] = dot(A row m+r, w row j) for R rows of A (1 or 2) and NT = 4 weight rows; length kp (multiple of 32).
template <int R>
void dots(const float* A, int64_t kp, const float* w, float out[R][4]) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kp; k += 8) {
    __m256 wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = _mm256_loadu_ps(w + j * kp + k);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_loadu_ps(A + r * kp + k);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_fmadd_ps(av, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) out[r][j] = hsum(acc[r][j]);
#else
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t k = 0; k < kp; k += 8)
        for (int l = 0; l < 8; ++l) acc[l] += A[r * kp + k + l] * w[j * kp + k + l];
      out[r][j] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
#endif
}

#if defined(__AVX2__) && defined(__FMA__)
// Skinny path (M <= 4): weights are never written out as floats. Per group,
//   sum_k (q_k - zp) * s * a_k  =  s * (sum_k q_k * a_k)  -  zp * s * (sum_k a_k),
// so the inner loop only widens nibbles to floats and multiplies them with A (fp32 accumulation).
template <int R>
void rows_skinny(const Int4GemmArgs& a, const float* A, int64_t kp, int64_t n0, int64_t n1) {
  const int64_t g = a.group, nb = kp / g, zb = (nb + 1) / 2;
  std::vector<float> asum(static_cast<size_t>(R * nb));
  for (int r = 0; r < R; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      float t = 0;
      for (int64_t k = 0; k < g; ++k) t += A[r * kp + b * g + k];
      asum[r * nb + b] = t;
    }
  const __m128i mask = _mm_set1_epi8(0x0f);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* brow = a.B + n * nb * (g / 2);
    __m256 total[R];
    float zterm[R];
    for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps(), zterm[r] = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      const float s = load_f(a.scales, a.scale_dtype, n * nb + b);
      float zp = 8.0f;
      if (a.zero_points) {
        const uint8_t z = a.zero_points[n * zb + b / 2];
        zp = static_cast<float>((b & 1) ? (z >> 4) : (z & 15));
      }
      __m256 acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
      const uint8_t* blk = brow + b * (g / 2);
      const float* ab = A + b * g;
      for (int64_t i = 0; i < g / 2; i += 16) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + i));
        const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        const __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);
        const __m256 q[4] = {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v0)),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v0, 8))),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v1)),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v1, 8)))};
        for (int r = 0; r < R; ++r)
          for (int j = 0; j < 4; ++j) acc[r] = _mm256_fmadd_ps(q[j], _mm256_loadu_ps(ab + r * kp + 2 * i + 8 * j), acc[r]);
      }
      const __m256 sv = _mm256_set1_ps(s);
      for (int r = 0; r < R; ++r) {
        total[r] = _mm256_fmadd_ps(acc[r], sv, total[r]);
        zterm[r] += zp * s * asum[r * nb + b];
      }
    }
    const float bias = a.bias ? load_f(a.bias, a.dtype, n) : 0.0f;
    for (int r = 0; r < R; ++r) store_f(a.Y, a.dtype, r * a.N + n, hsum(total[r]) - zterm[r] + bias);
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// M >= 24: 16 weight rows are dequantized and packed k-major (Wp[k][16]); an R x 16 register tile
// (R <= 6 rows of A, 2 x 8-wide accumulators per row) walks K broadcasting A and FMAs with Wp.
template <int R>
void tile_6x16(const float* A, int64_t kp, const float* Wp, float out[6][16]) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = _mm256_setzero_ps(), acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kp; ++k) {
    const __m256 w0 = _mm256_loadu_ps(Wp + k * 16), w1 = _mm256_loadu_ps(Wp + k * 16 + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(A + r * kp + k);
      acc[r][0] = _mm256_fmadd_ps(av, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, w1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out[r], acc[r][0]);
    _mm256_storeu_ps(out[r] + 8, acc[r][1]);
  }
}

void rows_gemm(const Int4GemmArgs& a, const float* A, int64_t kp, int64_t n0, int64_t n1) {
  std::vector<float> tmp(static_cast<size_t>(16 * kp)), Wp(static_cast<size_t>(16 * kp));
  for (int64_t n = n0; n < n1; n += 16) {
    const int64_t cnt = std::min<int64_t>(16, n1 - n);
    for (int64_t j = 0; j < 16; ++j) {
      if (j < cnt) dequant_row(a, n + j, tmp.data() + j * kp);
      else std::fill(tmp.begin() + j * kp, tmp.begin() + (j + 1) * kp, 0.0f);
    }
    for (int64_t k = 0; k < kp; ++k)
      for (int64_t j = 0; j < 16; ++j) Wp[k * 16 + j] = tmp[j * kp + k];
    float bias[16] = {};
    if (a.bias)
      for (int64_t j = 0; j < cnt; ++j) bias[j] = load_f(a.bias, a.dtype, n + j);
    for (int64_t m = 0; m < a.M; m += 6) {
      float out[6][16];
      const int64_t rcount = std::min<int64_t>(6, a.M - m);
      switch (rcount) {
        case 6: tile_6x16<6>(A + m * kp, kp, Wp.data(), out); break;
        case 5: tile_6x16<5>(A + m * kp, kp, Wp.data(), out); break;
        case 4: tile_6x16<4>(A + m * kp, kp, Wp.data(), out); break;
        case 3: tile_6x16<3>(A + m * kp, kp, Wp.data(), out); break;
        case 2: tile_6x16<2>(A + m * kp, kp, Wp.data(), out); break;
        default: tile_6x16<1>(A + m * kp, kp, Wp.data(), out); break;
      }
      for (int64_t r = 0; r < rcount; ++r)
        for (int64_t j = 0; j < cnt; ++j) store_f(a.Y, a.dtype, (m + r) * a.N + n + j, out[r][j] + bias[j]);
    }
  }
}
#endif

// Columns [n0, n1) of Y; A is fp32 with row stride kp, zero-padded beyond K.
void rows(const Int4GemmArgs& a, const float* A, int64_t kp, int64_t n0, int64_t n1) {
#if defined(__AVX2__) && defined(__FMA__)
  switch (a.M) {
    case 1: return rows_skinny<1>(a, A, kp, n0, n1);
    case 2: return rows_skinny<2>(a, A, kp, n0, n1);
    case 3: return rows_skinny<3>(a, A, kp, n0, n1);
    case 4: return rows_skinny<4>(a, A, kp, n0, n1);
    default:
      if (a.M >= 24) return rows_gemm(a, A, kp, n0, n1);  // below that, packing costs more than it saves
      break;
  }
#endif
  std::vector<float> w(static_cast<size_t>(4 * kp), 0.0f);
  for (int64_t n = n0; n < n1; n += 4) {
    const int64_t cnt = std::min<int64_t>(4, n1 - n);
    for (int64_t j = 0; j < 4; ++j) {
      if (j < cnt) dequant_row(a, n + j, w.data() + j * kp);
      else std::fill(w.begin() + j * kp, w.begin() + (j + 1) * kp, 0.0f);
    }
    float bias[4] = {0, 0, 0, 0};
    if (a.bias)
      for (int64_t j = 0; j < cnt; ++j) bias[j] = load_f(a.bias, a.dtype, n + j);
    int64_t m = 0;
    for (; m + 2 <= a.M; m += 2) {
      float out[2][4];
      dots<2>(A + m * kp, kp, w.data(), out);
      for (int r = 0; r < 2; ++r)
        for (int64_t j = 0; j < cnt; ++j) store_f(a.Y, a.dtype, (m + r) * a.N + n + j, out[r][j] + bias[j]);
    }
    if (m < a.M) {
      float out[1][4];
      dots<1>(A + m * kp, kp, w.data(), out);
      for (int64_t j = 0; j < cnt; ++j) store_f(a.Y, a.dtype, m * a.N + n + j, out[0][j] + bias[j]);
    }
  }
}

}  // namespace

namespace {
struct Job {
  const Int4GemmArgs* a;
  const float* A;
  int64_t kp, rows_per_task;
};
void run_task(void* usr, size_t i) {
  const Job& j = *static_cast<const Job*>(usr);
  const int64_t n0 = static_cast<int64_t>(i) * j.rows_per_task;
  rows(*j.a, j.A, j.kp, n0, std::min(j.a->N, n0 + j.rows_per_task));
}
}  // namespace

extern "C" const char* onnxcomp_int4_gemm_cpu_par(const Int4GemmArgs* args, Int4ParallelFor pf, void* pf_ctx) {
  if (const char* e = onnxcomp_int4_check_args(args)) return e;
  const Int4GemmArgs& a = *args;
  if (a.M == 0) return nullptr;
  const int64_t kp = ((a.K + a.group - 1) / a.group) * a.group;  // n_blocks * group: a multiple of 32
  std::vector<float> Af(static_cast<size_t>(a.M * kp), 0.0f);
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t k = 0; k < a.K; ++k) Af[m * kp + k] = load_f(a.A, a.dtype, m * a.K + k);
  const double work = static_cast<double>(a.M + 4) * a.N * kp;
  if (work < 2e6 || a.N <= 4) {  // too small to be worth a thread hand-off
    rows(a, Af.data(), kp, 0, a.N);
    return nullptr;
  }
  if (pf) {
    // tasks of whole 4-row tiles, about 32k..128k multiply-adds each or more
    int64_t rows_per_task = a.M > 4 ? 16 : 4;  // whole 16-column panels for the M > 4 path
    while (rows_per_task < 64 && static_cast<double>(rows_per_task) * (a.M + 4) * kp < 1.5e5) rows_per_task *= 2;
    Job job{&a, Af.data(), kp, rows_per_task};
    pf(pf_ctx, run_task, static_cast<size_t>((a.N + rows_per_task - 1) / rows_per_task), &job);
    return nullptr;
  }
  const int threads = static_cast<int>(std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), (a.N + 3) / 4));
  if (threads <= 1) {
    rows(a, Af.data(), kp, 0, a.N);
    return nullptr;
  }
  std::vector<std::thread> pool;
  const int64_t step = ((a.N + threads - 1) / threads + 15) / 16 * 16;  // whole 16-row panels
  for (int t = 0; t < threads; ++t) {
    const int64_t n0 = t * step, n1 = std::min(a.N, n0 + step);
    if (n0 < n1) pool.emplace_back(rows, std::cref(a), Af.data(), kp, n0, n1);
  }
  for (auto& th : pool) th.join();
  return nullptr;
}

extern "C" const char* onnxcomp_int4_gemm_cpu(const Int4GemmArgs* args) {
  return onnxcomp_int4_gemm_cpu_par(args, nullptr, nullptr);
}
