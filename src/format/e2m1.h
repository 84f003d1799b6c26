#pragma once
// E2M1 (FP4): sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0; no Inf/NaN.
// Magnitudes by code&7: 0, 0.5, 1, 1.5, 2, 3, 4, 6.
#include "common/host_device.h"

namespace q2::e2m1 {

constexpr float kMax = 6.0f;

Q2_HD float decode(uint8_t code) {
  const uint32_t e = (code >> 1) & 3u, m = code & 1u;
  const float mag = e == 0 ? 0.5f * static_cast<float>(m)
                           : bits_float(((e - 1u + 127u) << 23) | (m << 22));
  return (code & 8u) ? -mag : mag;
}

// Magnitude code (0..7) of |v| rounded to nearest, ties to the even code, saturating at 6.
Q2_HD uint8_t encode_magnitude_rne(float a) {
  // Count the decision thresholds passed; each midpoint goes to the neighbour with the even
  // code (<= keeps the lower one, >= takes the upper one). Branch-free, so it vectorizes.
  return static_cast<uint8_t>((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
                              (a > 5.0f));
}

Q2_HD uint8_t sign_bit(float v) { return (float_bits(v) >> 31) ? 8u : 0u; }

// Round-to-nearest-even, saturating, as the hardware's cvt.rn.satfinite. The sign is kept,
// so small negatives give -0 (code 8), like the hardware conversion.
Q2_HD uint8_t encode_rne(float v) {
  return sign_bit(v) | encode_magnitude_rne(bits_float(float_bits(v) & 0x7FFFFFFFu));
}

// Stochastic rounding of v (|v| <= 6 expected; larger magnitudes saturate to 6): for
// lo <= |v| < hi on the grid, returns hi with probability (|v| - lo) / (hi - lo). The
// difference and the power-of-two step are exact in float32, so the decision
// `u < p` with u = (r >> 8) * 2^-24 is bit-reproducible anywhere.
Q2_HD uint8_t encode_sr(float v, uint32_t random) {
  const float a = bits_float(float_bits(v) & 0x7FFFFFFFu);
  uint8_t lo;
  if (a >= kMax) {
    lo = 7;
  } else {
    // Largest magnitude code whose value is <= a.
    lo = a < 0.5f ? 0 : a < 1.0f ? 1 : a < 1.5f ? 2 : a < 2.0f ? 3 : a < 3.0f ? 4 : a < 4.0f ? 5 : 6;
    const float lo_v = decode(lo), step = decode(static_cast<uint8_t>(lo + 1)) - lo_v;
    const float p = (a - lo_v) / step;
    const float u = static_cast<float>(random >> 8) * 0x1p-24f;
    if (u < p) ++lo;
  }
  return sign_bit(v) | lo;
}

}  // namespace q2::e2m1
