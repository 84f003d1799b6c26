#pragma once
// A faster E2M1 round-to-nearest-even for the kernels' inner loops, equal to the reference
// e2m1::encode_rne / e2m1::decode for EVERY float32 input (checked exhaustively over all 2^32
// bit patterns by the GPU tests, FastCodec.E2m1EqualsReferenceForAllFloats, and once on the
// CPU when it was written). The reference counts seven threshold comparisons and decodes with
// branches (~36 instructions); this one is ~14.
//
// How: for a = |v| let k = clamp(exponent(a), 0, 2) and C = 2^(22 + k). Then a + C, rounded
// once to float32 (ties to even), is C + n * 2^(k-1) with n = a rounded to the E2M1 grid step of
// a's binade (0.5 below 2, 1 in [2, 4), 2 from 4 on), ties to even n, exactly the reference's
// tie rule (0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4). The magnitude code is
// n + 2k, saturated at 7 (6.0); NaN gives code 0 like the reference (all comparisons false).
#include "common/hd.h"

namespace q2::cuda {

struct E2m1Rounded {
  uint32_t code;  // == e2m1::encode_rne(v)
  float mag;      // == |e2m1::decode(code)| (for NaN v: unspecified; callers only multiply it by NaN)
};

Q2_HD E2m1Rounded e2m1_round_fast(float v) {
  const uint32_t b = float_bits(v);
  uint32_t e = b & 0x7F800000u;                  // |v|'s exponent field, in place
  e = e < 0x3F800000u ? 0x3F800000u : e;         // k >= 0
  e = e > 0x40800000u ? 0x40800000u : e;         // k <= 2
  const float c = bits_float(e + 0x0B000000u);   // C = 2^(22 + k)
  const float sum = bits_float(b & 0x7FFFFFFFu) + c;  // |v| + C: the one rounding
  const float r = sum - c;                       // exact (Sterbenz): |v| on the grid
  // n + 2k = (bits(sum) - bits(C)) + ((e >> 22) - 254)
  uint32_t code = float_bits(sum) - e + (e >> 22) - (0x0B000000u + 254u);
  code = code < 7u ? code : 7u;
  if (!(v == v)) code = 0;  // NaN: every threshold comparison of the reference is false
  return {code | ((b >> 28) & 8u), r < 6.0f ? r : 6.0f};
}

}  // namespace q2::cuda
