#include "format/bf16_matrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace q2 {
namespace {

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

uint32_t to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Round to nearest even by distances in float64: the two BF16 neighbours of v are its top 16 bits
// and the next pattern up in magnitude (2^128 past the largest finite, so that overflow gives inf).
uint32_t reference_bits(float v) {
  const uint32_t b = to_bits(v), lo = b & 0xFFFF0000u, hi = lo + 0x10000u;
  const double lo_mag = std::fabs(static_cast<double>(from_bits(lo)));
  const double hi_mag = (hi & 0x7FFFFFFFu) == 0x7F800000u ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(from_bits(hi)));
  const double mag = std::fabs(static_cast<double>(v));
  const double d_lo = mag - lo_mag, d_hi = hi_mag - mag;
  if (d_lo < d_hi) return lo;
  if (d_hi < d_lo) return hi;
  return (lo & 0x10000u) ? hi : lo;
}

// Every sign, exponent and BF16 mantissa, with the low 16 bits at the boundaries (exact, just
// above, just below and at the tie) and a spread between.
TEST(Bf16, RoundsToNearestEvenOnEveryBf16PatternAndItsBoundaries) {
  const uint32_t lows[] = {0x0000u, 0x0001u, 0x3FFFu, 0x7FFEu, 0x7FFFu, 0x8000u, 0x8001u, 0xBFFFu, 0xFFFEu, 0xFFFFu};
  int64_t checked = 0;
  for (uint32_t top = 0; top <= 0xFFFFu; ++top) {
    if ((top & 0x7F80u) == 0x7F80u) continue;  // inf and NaN: below
    for (const uint32_t low : lows) {
      const float v = from_bits(top << 16 | low);
      const uint32_t want = reference_bits(v);
      ASSERT_EQ(to_bits(bf16::round(v)), want) << std::hexfloat << v << " bits " << std::hex << (top << 16 | low);
      ASSERT_EQ(static_cast<uint32_t>(bf16::encode(v)) << 16, want);
      ++checked;
    }
  }
  EXPECT_EQ(checked, (0x10000 - 0x100) * 10);  // 2 signs x 128 mantissas are inf or NaN
}

TEST(Bf16, KeepsInfinitiesAndNaNs) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bf16::round(inf), inf);
  EXPECT_EQ(bf16::round(-inf), -inf);
  // A NaN whose payload sits only in the low 16 bits must not become inf.
  for (const uint32_t b : {0x7F800001u, 0xFF800001u, 0x7FC00000u, 0x7FFFFFFFu}) EXPECT_TRUE(std::isnan(bf16::round(from_bits(b))));
}

TEST(Bf16, MatrixRoundsEachElementAndKeepsItsShape) {
  Matrix m(3, 5);
  for (int64_t i = 0; i < m.size(); ++i) m.data[i] = from_bits(0x3F800000u + static_cast<uint32_t>(i) * 0x1357u);
  const Matrix r = bf16::round(m);
  ASSERT_EQ(r.rows, 3);
  ASSERT_EQ(r.cols, 5);
  for (int64_t i = 0; i < m.size(); ++i) EXPECT_EQ(to_bits(r.data[i]), reference_bits(m.data[i])) << "element " << i;
}

}  // namespace
}  // namespace q2
