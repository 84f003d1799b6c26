#include "format/e2m1.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace q2 {
namespace {

// Float64 definition of code c: sign bit 3, exponent bits 2..1 with bias 1, mantissa bit 0.
double definition(int c) {
  const int e = (c >> 1) & 3, m = c & 1;
  const double mag = e == 0 ? m * 0.5 : (1.0 + m / 2.0) * std::ldexp(1.0, e - 1);
  return (c & 8) ? -mag : mag;
}

// Nearest representable magnitude code in float64, ties to the even code, saturating.
int nearest_code(double a) {
  a = std::min(a, 6.0);  // saturating conversion
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double dc = std::fabs(a - definition(c)), db = std::fabs(a - definition(best));
    if (dc < db || (dc == db && c % 2 == 0)) best = c;
  }
  return best;
}

TEST(E2M1, DecodesAllSixteenCodes) {
  for (int c = 0; c < 16; ++c) EXPECT_EQ(static_cast<double>(e2m1::decode(static_cast<uint8_t>(c))), definition(c)) << c;
  EXPECT_TRUE(std::signbit(e2m1::decode(8)));
}

TEST(E2M1, RoundsEveryFloatToNearestEven) {
  // Every float32 in [0, 16) whose low 7 mantissa bits are zero, plus every midpoint and its
  // neighbours one ulp away, both signs.
  std::vector<float> probes;
  for (uint32_t b = 0; bits_float(b) < 16.0f; b += 128) probes.push_back(bits_float(b));
  for (int c = 0; c < 7; ++c) {
    const float mid = static_cast<float>(0.5 * (definition(c) + definition(c + 1)));
    probes.insert(probes.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 100.0f)});
  }
  probes.push_back(1e30f);
  for (float p : probes)
    for (float v : {p, -p}) {
      const int expect = nearest_code(std::fabs(static_cast<double>(v))) | (std::signbit(v) ? 8 : 0);
      ASSERT_EQ(e2m1::encode_rne(v), expect) << "v = " << v;
    }
}

TEST(E2M1, TiesFollowTheHardwareTable) {
  const std::pair<float, float> ties[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                                          {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (auto [v, want] : ties) EXPECT_EQ(e2m1::decode(e2m1::encode_rne(v)), want) << v;
}

TEST(E2M1, StochasticRoundingUpProbabilityIsExact) {
  // Over 2^16 evenly spaced random words, the fraction rounding up must equal
  // (|v| - lo) / (hi - lo) to within one word's weight.
  const double grid[] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  for (int k = 0; k < 7; ++k)
    for (double f : {0.0, 0.1, 0.25, 0.5, 0.7, 0.999}) {
      const double v = grid[k] + f * (grid[k + 1] - grid[k]);
      int up = 0;
      for (uint32_t i = 0; i < 65536; ++i) up += e2m1::decode(e2m1::encode_sr(static_cast<float>(v), i << 16)) > grid[k];
      EXPECT_NEAR(up / 65536.0, f, 1.0 / 65536 + 1e-7) << v;
      EXPECT_EQ(e2m1::encode_sr(static_cast<float>(-v), 0u) & 8, 8);
    }
  EXPECT_EQ(e2m1::decode(e2m1::encode_sr(7.0f, 0u)), 6.0f);  // saturates
}

}  // namespace
}  // namespace q2
