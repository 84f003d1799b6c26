#pragma once
// E4M3 "fn" (FP8): sign, 4 exponent bits (bias 7), 3 mantissa bits; no Inf;
// NaN is S.1111.111; largest finite 448; smallest normal 2^-6; subnormal step 2^-9.
#include "common/host_device.h"

namespace q2::e4m3 {

constexpr float kMax = 448.0f;
constexpr uint8_t kMaxCode = 0x7E;
constexpr uint8_t kNaNCode = 0x7F;

Q2_HD bool is_nan_code(uint8_t c) { return (c & 0x7Fu) == 0x7Fu; }

Q2_HD float decode(uint8_t c) {
  const uint32_t e = (c >> 3) & 15u, m = c & 7u;
  float mag;
  if (is_nan_code(c)) {
    mag = bits_float(0x7FC00000u);
  } else if (e == 0) {
    mag = static_cast<float>(m) * 0x1p-9f;
  } else {
    mag = bits_float(((e - 7u + 127u) << 23) | (m << 20));
  }
  return (c & 0x80u) ? -mag : mag;
}

// Magnitude code of a >= 0 (finite), rounded to nearest even and saturated at 448.
Q2_HD uint8_t encode_magnitude_rne(float a) {
  if (a >= kMax) return kMaxCode;  // values in [448, 464] round to 448; beyond saturates
  if (a < 0x1p-6f) {
    // Subnormal range: a * 2^9 is exact; round it to an integer, ties to even.
    const float s = a * 512.0f;
    uint32_t n = static_cast<uint32_t>(s);
    const float frac = s - static_cast<float>(n);
    if (frac > 0.5f || (frac == 0.5f && (n & 1u))) ++n;
    return static_cast<uint8_t>(n);  // n == 8 is exactly the code of 2^-6
  }
  // Normal: round the 23-bit mantissa to 3 bits, ties to even, carrying into the exponent.
  const uint32_t b = float_bits(a);
  const uint32_t r = b + 0x7FFFFu + ((b >> 20) & 1u);
  const uint32_t e = ((r >> 23) & 0xFFu) - 127u + 7u, m = (r >> 20) & 7u;
  const uint32_t code = (e << 3) | m;
  return static_cast<uint8_t>(code > kMaxCode ? kMaxCode : code);
}

// Round-to-nearest-even with saturation (cvt.rn.satfinite); NaN maps to the NaN code.
Q2_HD uint8_t encode_rne(float v) {
  const uint32_t b = float_bits(v);
  const uint8_t sign = static_cast<uint8_t>((b >> 24) & 0x80u);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x7FFFFFu)) return sign | kNaNCode;
  return sign | encode_magnitude_rne(bits_float(b & 0x7FFFFFFFu));
}

// Magnitude code of the largest E4M3 value <= a (a >= 0, finite), saturated at 448.
Q2_HD uint8_t encode_magnitude_rtz(float a) {
  if (a >= kMax) return kMaxCode;
  if (a < 0x1p-6f) return static_cast<uint8_t>(static_cast<uint32_t>(a * 512.0f));
  const uint32_t b = float_bits(a);
  return static_cast<uint8_t>(((((b >> 23) & 0xFFu) - 127u + 7u) << 3) | ((b >> 20) & 7u));
}

// Stochastic rounding of a >= 0 onto the E4M3 grid over its whole range (subnormals
// included): returns the upper neighbour with probability (a - lo) / (hi - lo). As for
// E2M1, the difference and the power-of-two step are exact, so `u < p` reproduces
// bit for bit. Values at or above 448 saturate.
Q2_HD uint8_t encode_sr(float a, uint32_t random) {
  uint8_t lo = encode_magnitude_rtz(a);
  if (lo == kMaxCode) return lo;
  const float lo_v = decode(lo), step = decode(static_cast<uint8_t>(lo + 1)) - lo_v;
  const float p = (a - lo_v) / step;
  const float u = static_cast<float>(random >> 8) * 0x1p-24f;
  return u < p ? static_cast<uint8_t>(lo + 1) : lo;
}

// E8M4 with round toward zero: keep sign, 8 exponent bits and the top 4 mantissa bits.
// MS-EDEN's first-stage (pre-correction) group scale, as in the production kernels.
Q2_HD float round_e8m4_rtz(float v) { return bits_float(float_bits(v) & 0xFFF80000u); }

}  // namespace q2::e4m3
