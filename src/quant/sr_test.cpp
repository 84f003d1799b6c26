#include "quant/sr.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/error_stats.h"
#include "quant/reference64.h"

namespace q2::quant {
namespace {

TEST(Sr, MatchesFloat64RederivationWithTheSameRandomStream) {
  const Matrix x = random_matrix(33, 256, Dist::kLaplace, 5);
  for (float so : {kSrScaleOverride, 1.0f}) {
    const NVFP4Tensor q = quantize_sr(MatrixRef(x, "x"), so, 77);
    const ref64::Result ref = ref64::sr(x, so, 77);
    const ref64::Agreement a = ref64::compare(q.dequantize(), ref, 1e-6);
    EXPECT_EQ(a.mismatched, 0);
    EXPECT_LT(a.ambiguous, x.size() / 100);
  }
}

// Mean of n draws versus one draw: for an unbiased quantizer E||mean - x||^2 = E||q - x||^2 / n.
double bias_ratio(const Matrix& x, float scale_override, int n) {
  const DrawErrors e = mean_of_draws(
      x, n, [&](uint64_t k) { return quantize_sr(MatrixRef(x, "x"), scale_override, 1000 + k).dequantize(); });
  return e.mean * n / e.single;
}

TEST(Sr, IsUnbiasedWithTheSixteenSeventeenthsOverride) {
  const Matrix x = random_matrix(64, 256, Dist::kGaussian, 9);
  const double r = bias_ratio(x, kSrScaleOverride, 256);
  EXPECT_GT(r, 0.7);
  EXPECT_LT(r, 1.3);
}

TEST(Sr, WithoutTheOverrideClippingShowsAsBias) {
  // The statistical test above must be able to fail: plain scales clip the largest
  // elements, and the mean of many draws stops converging.
  const Matrix x = random_matrix(64, 256, Dist::kGaussian, 9);
  EXPECT_GT(bias_ratio(x, 1.0f, 256), 2.0);
}

TEST(Sr, NeverClipsWithTheOverride) {
  const Matrix x = random_matrix(64, 256, Dist::kStudent3, 4);
  const NVFP4Tensor q = quantize_sr(MatrixRef(x, "x"), kSrScaleOverride, 1);
  // Every scaled magnitude |x| / (s t) stays within the grid's maximum 6.
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t c = 0; c < x.cols; ++c)
      ASSERT_LE(std::fabs(x.at(r, c)), 6.0 * e4m3::decode(q.scale(r, c / 16)) * q.tensor_scale * (1 + 1e-6));
}

TEST(Sr, BadInputAndZeros) {
  Matrix y(2, 16);
  y.at(1, 3) = NAN;
  EXPECT_THROW(quantize_sr(MatrixRef(y, "grad"), kSrScaleOverride, 0), Error);
  const NVFP4Tensor z = quantize_sr(MatrixRef(Matrix(4, 32), "z"), kSrScaleOverride, 0);
  for (uint8_t b : z.packed) EXPECT_EQ(b, 0);
  EXPECT_TRUE(std::isfinite(z.tensor_scale));
}

}  // namespace
}  // namespace q2::quant
