// float16 / bfloat16 <-> float32 conversions (round to nearest even), portable C++.
#pragma once
#include <stdint.h>
#include <string.h>

namespace onnxcomp {

inline float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal: value = man * 2^-24
    float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (man << 13));
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (a >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  if (a < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    // round(|f| * 2^24) with ties to even, done in float (exact for this range)
    const float v = bits_to_float(a) * 16777216.0f;
    uint32_t r = (uint32_t)v;
    const float frac = v - (float)r;
    if (frac > 0.5f || (frac == 0.5f && (r & 1))) ++r;
    return sign | (uint16_t)r;
  }
  const uint32_t exp = ((a >> 23) - 112) << 10;
  const uint32_t man = (a >> 13) & 0x3ff;
  const uint32_t rest = a & 0x1fff;
  uint32_t h = exp | man;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // may carry into the exponent: correct
  return sign | (uint16_t)h;
}

inline float bf16_to_float(uint16_t b) { return bits_to_float((uint32_t)b << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

}  // namespace onnxcomp
