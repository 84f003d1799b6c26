#include "format/e4m3.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace q2 {
namespace {

// Float64 definition of E4M3 "fn": bias 7, subnormals at exponent 0, S.1111.111 is NaN.
double definition(int c) {
  const int e = (c >> 3) & 15, m = c & 7;
  if ((c & 0x7F) == 0x7F) return NAN;
  const double mag = e == 0 ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return (c & 0x80) ? -mag : mag;
}

int nearest_code(double a) {
  int best = 0;
  for (int c = 1; c <= 0x7E; ++c) {
    const double dc = std::fabs(a - definition(c)), db = std::fabs(a - definition(best));
    if (dc < db || (dc == db && c % 2 == 0)) best = c;
  }
  return best;
}

TEST(E4M3, DecodesAll256Codes) {
  int nan = 0;
  for (int c = 0; c < 256; ++c) {
    const double want = definition(c);
    const float got = e4m3::decode(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
      ++nan;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << c;
    }
  }
  EXPECT_EQ(nan, 2);
  EXPECT_EQ(e4m3::decode(0x7E), 448.0f);
  EXPECT_EQ(e4m3::decode(0x08), 0x1p-6f);
  EXPECT_EQ(e4m3::decode(0x01), 0x1p-9f);
}

TEST(E4M3, RoundsFloatsToNearestEvenWithSaturation) {
  std::vector<float> probes;
  // Dense sweep of [2^-12, 512): every float with the low 12 mantissa bits zero.
  for (uint32_t b = float_bits(0x1p-12f); bits_float(b) < 512.0f; b += 4096) probes.push_back(bits_float(b));
  // Every midpoint between neighbours and one ulp either side.
  for (int c = 0; c < 0x7E; ++c) {
    const float mid = static_cast<float>(0.5 * (definition(c) + definition(c + 1)));
    probes.insert(probes.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)});
  }
  for (float p : probes)
    for (float v : {p, -p}) {
      const int expect = nearest_code(std::fabs(static_cast<double>(v))) | (std::signbit(v) ? 0x80 : 0);
      ASSERT_EQ(e4m3::encode_rne(v), expect) << "v = " << v;
    }
  EXPECT_EQ(e4m3::encode_rne(449.0f), 0x7E);
  EXPECT_EQ(e4m3::encode_rne(1e30f), 0x7E);
  EXPECT_EQ(e4m3::encode_rne(INFINITY), 0x7E);  // satfinite
  EXPECT_EQ(e4m3::encode_rne(-1e30f), 0xFE);
  EXPECT_TRUE(e4m3::is_nan_code(e4m3::encode_rne(NAN)));
}

TEST(E4M3, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F || c == 0x80) continue;  // NaNs; -0 encodes with its sign
    EXPECT_EQ(e4m3::encode_rne(e4m3::decode(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(E4M3, TruncationGivesTheLargestCodeNotAbove) {
  for (uint32_t b = 0; bits_float(b) < 500.0f; b += 997) {
    const float a = bits_float(b);
    const int c = e4m3::encode_magnitude_rtz(a);
    EXPECT_LE(definition(c), a);
    if (c < 0x7E) {
      EXPECT_GT(definition(c + 1), a);
    }
  }
}

TEST(E4M3, StochasticRoundingUpProbabilityIsExact) {
  for (int c : {0, 1, 5, 7, 8, 9, 40, 0x70, 0x7D})
    for (double f : {0.0, 0.125, 0.5, 0.9}) {
      const double lo = definition(c), v = lo + f * (definition(c + 1) - lo);
      int up = 0;
      for (uint32_t i = 0; i < 65536; ++i) up += e4m3::encode_sr(static_cast<float>(v), i << 16) == c + 1;
      EXPECT_NEAR(up / 65536.0, f, 1.0 / 65536 + 1e-6) << "code " << c << " f " << f;
    }
  EXPECT_EQ(e4m3::encode_sr(500.0f, 0u), 0x7E);
}

TEST(E4M3, E8M4TruncationKeepsFiveSignificantBits) {
  for (uint32_t b = float_bits(1e-6f); bits_float(b) < 1e6f; b += 100003) {
    const float v = bits_float(b), r = e4m3::round_e8m4_rtz(v);
    EXPECT_LE(r, v);
    EXPECT_GT(r, v * (1.0f - 1.0f / 16.0f));
    EXPECT_EQ(float_bits(r) & 0x7FFFF, 0u);
  }
}

}  // namespace
}  // namespace q2
