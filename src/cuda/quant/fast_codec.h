#pragma once
// Faster equivalents of the reference codecs for the kernels' inner loops, each checked
// exhaustively against the reference on the GPU (fast_codec_test.cpp, FastCodec.*):
//   e2m1_round_fast  == e2m1::encode_rne / decode for every finite float (~10 instructions
//                       where the reference's threshold count and branchy decode take ~36),
//                       e2m1_round_small the same magnitudes below 7 (5 instructions);
//   e2m1_sr_fast     == e2m1::encode_sr for every finite float and every random word;
//   Quotient         == IEEE x / d wherever a code depends on it;
//   e4m3_*_fast      == e4m3::encode_rne / decode (hardware conversions);
//   e4m3_sr_fast     == e4m3::encode_sr for a >= 0 (zeros, finite, +Inf) and every random word.
// NaN input gives unspecified codes here: every kernel detects NaN/Inf separately and reports
// an error instead of returning codes.
//
// Rounding to the grid: for a = |v| let k = clamp(exponent(a), 0, 2) and C = 2^(22 + k) +
// k 2^k. Then a + C, rounded once to float32 (ties to even), is C + n * 2^(k-1) with n = a
// rounded to the E2M1 grid step of a's binade (0.5 below 2, 1 in [2, 4), 2 from 4 on), ties to
// even n, exactly the reference's tie rule (0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4,
// 5->4): C's k 2^k is 2k steps, an even number, so it leaves the ties alone, and the sum's low
// mantissa bits are the magnitude code n + 2k (7 is 6.0). Rounding toward zero instead gives
// the grid point below a, the start of a stochastic rounding step of 2^(k-1).
// C's bits, (149 + k) << 23 | 2k, take integer operations only: r = max(exponent field + (22 <<
// 23), 149 << 23) - 297 (one VIADDMNMX on sm_90), then r + (r >> 22), as r >> 22 = 297 + 2k.
#include <cmath>

#include "common/host_device.h"
#include "format/e4m3.h"

namespace q2::cuda {

struct E2m1Rounded {
  uint32_t code;  // == e2m1::encode_rne(v) (e2m1_round_small: without the sign bit)
  float mag;      // == |e2m1::decode(code)|
};

// r = bits(2^(22 + k)) - 297 with k = max(exponent(v), 0); v's sign does not matter.
Q2_HD uint32_t e2m1_shifter_base(float v) {
  const uint32_t r = (float_bits(v) & 0x7F800000u) + (0x0B000000u - 297u);
  return r > 0x4A800000u - 297u ? r : 0x4A800000u - 297u;
}

// The same with k at most 2.
Q2_HD uint32_t e2m1_shifter_base_sat(float v) {
  const uint32_t r = e2m1_shifter_base(v);
  return r < 0x4B800000u - 297u ? r : 0x4B800000u - 297u;
}

// C from r.
Q2_HD float e2m1_shifter(uint32_t r) { return bits_float(r + (r >> 22)); }

// Round-to-nearest magnitude code (no sign) for |v| < 7 and its value, without saturation
// (MS-EDEN's values stay below 6.5 by construction, so the clamps can go: |v| < 8 also bounds
// the binade by 4 without a clamp). The code is the low nibble of the sum (n + 2k <= 7); masking
// with 15 rather than 7 lets the packing's shift by 28 drop the mask.
Q2_HD E2m1Rounded e2m1_round_small(float v) {
  const float c = e2m1_shifter(e2m1_shifter_base(v)), sum = fabsf(v) + c;
  return {float_bits(sum) & 15u, sum - c};
}

// Round-to-nearest-even with saturation at 6 and the sign kept (small negatives give -0).
// From a = 7 on, n + 2k >= 8, also where a + C leaves C's binade (Inf; NaN: code 7, value 6).
Q2_HD E2m1Rounded e2m1_round_fast(float v) {
  const uint32_t r = e2m1_shifter_base_sat(v);
  const float c = e2m1_shifter(r), sum = fabsf(v) + c;
  const uint32_t n2k = float_bits(sum) - r - 297u;
  return {(n2k < 7u ? n2k : 7u) | ((float_bits(v) >> 28) & 8u), fminf(sum - c, 6.0f)};
}

// a + c rounded toward zero, for the shifters c > a >= 0 above: the sum stays in c's binade,
// so the nearest sum minus c is exact and tells whether it rounded up (the host's way; the
// GPU has the RZ add).
Q2_HD float add_rz(float a, float c) {
#ifdef __CUDA_ARCH__
  return __fadd_rz(a, c);
#else
  const float sum = a + c;
  return sum - c > a ? bits_float(float_bits(sum) - 1u) : sum;
#endif
}

// Stochastic rounding as e2m1::encode_sr: floor to the grid, then up with probability
// p = (a - lo) / step, step = 2^(k-1), decided by u < p with u = (random >> 8) * 2^-24. The
// division by the power of two is the exact multiplication by 2^(1-k).
Q2_HD uint32_t e2m1_sr_fast(float v, uint32_t random) {
  const float a = fabsf(v);
  const uint32_t r = e2m1_shifter_base_sat(v);
  const float c = e2m1_shifter(r), sum = add_rz(a, c);
  // 2^(1-k), bits (128 - k) << 23 = (277 << 23) - (r + 297)
  const float p = (a - (sum - c)) * bits_float(0x8A800000u - 297u - r);
  const float u = static_cast<float>(random >> 8) * 0x1p-24f;
  const uint32_t code = float_bits(sum) - r - 297u + (u < p ? 1u : 0u);  // a >= 6 goes past 7: saturate
  return (code < 7u ? code : 7u) | ((float_bits(v) >> 28) & 8u);
}

// x / d for many x and one d > 0, as IEEE division rounds it: the reciprocal once, then per x
// q0 = x * inv and one FMA correction, q0 + (x - q0 d) * inv (Markstein: with inv correctly
// rounded and q0 within an ulp, this rounds to the IEEE quotient while nothing under- or
// overflows). Callers branch once per group on `fast` (d in [2^-100, 2^100]) and divide
// otherwise. near(x) is the IEEE quotient for every x with exact_for(x) (|x| >= 2^-100 and
// |x / d| >= 2^-60, or x = 0) and otherwise a tiny value of x's sign: all an RTN code needs.
// Preconditions: |x / d| < 2^64 (callers: |x| <= group max, d ~ group max / 6).
struct Quotient {
  float d, inv, lo;
  bool fast;
  Q2_HD explicit Quotient(float divisor)
      : d(divisor),
        inv(1.0f / divisor),
        lo(fmaxf(0x1p-100f, divisor * 0x1p-60f)),
        fast(divisor >= 0x1p-100f && divisor <= 0x1p100f) {}
  Q2_HD float near(float x) const {
    const float q0 = x * inv;
    // The residual negated, (q0 d - x), so that x = -0 keeps its sign: -0 + -0 = -0.
    return fmaf(-fmaf(q0, d, -x), inv, q0);
  }
  Q2_HD bool exact_for(float x) const { return fabsf(x) >= lo || x == 0.0f; }
};

// E4M3 round-to-nearest-even with saturation (== e4m3::encode_rne for every non-NaN float)
// and decoding (== e4m3::decode for every code): one hardware conversion each on sm_89+.
Q2_HD uint8_t e4m3_encode_fast(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(0.0f), "f"(v));  // v -> low byte
  return static_cast<uint8_t>(r & 0xFFu);
#else
  return e4m3::encode_rne(v);
#endif
}

Q2_HD float e4m3_decode_fast(uint8_t code) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint32_t h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<uint16_t>(code)));
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<uint16_t>(h2 & 0xFFFFu)));
  return f;
#else
  return e4m3::decode(code);
#endif
}

// Stochastic rounding as e4m3::encode_sr, for a >= 0 (either zero, finite or +Inf), without its
// branches and division (14 instructions on sm_90; the reference compiles to over 100). Clamping
// to 448 first saturates: 448 has code 0x7E and p = 0. Then as e2m1_sr_fast: with k =
// max(exponent(x), -6) (subnormals share the step 2^-9 of [2^-6, 2^-5)), C = 2^(k + 20) has the
// grid step 2^(k - 3) as its ulp and x < 2^(k + 1), so x + C rounded toward zero is C + n step
// with n = floor(x / step) < 16: the grid point below x, whose code is n + 8 (k + 6).
Q2_HD uint32_t e4m3_sr_fast(float a, uint32_t random) {
  const float x = fminf(a, e4m3::kMax);
  const uint32_t e = (float_bits(x) & 0x7F800000u) + (20u << 23);
  const uint32_t r = e > (141u << 23) ? e : 141u << 23;  // C's bits, (k + 147) << 23
  const float c = bits_float(r), sum = add_rz(x, c);
  // p 2^24 = (x - lo) 2^(27 - k) exactly, as the reference's p; 2^(27 - k) has bits (301 << 23) - r.
  const float p24 = (x - (sum - c)) * bits_float((301u << 23) - r);
  // The reference's u < p is (random >> 8) < p24: the sign of their difference (a difference of
  // floats is 0 only if they are equal, and rounding keeps its sign), one instruction fewer than
  // a compare and select.
  const uint32_t up = float_bits(static_cast<float>(random >> 8) - p24) >> 31;
  return float_bits(sum) - r + (r >> 20) - 1128u + up;  // r >> 20 = 8 (k + 147)
}

}  // namespace q2::cuda
