#include "quant/ms_eden.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/error_stats.h"
#include "quant/reference64.h"

namespace q2::quant {
namespace {

TEST(MsEden, MatchesFloat64RederivationWithTheSameRandomStream) {
  for (bool chunk : {false, true})
    for (int n : {128, 16}) {
      const Matrix x = random_matrix(40, 512, Dist::kStudent3, 21);
      const Rht r(n, 5);
      MsEdenConfig cfg;
      cfg.group = chunk ? EdenGroup::kChunk : EdenGroup::k16;
      const NVFP4Tensor q = quantize_ms_eden(MatrixRef(x, "x"), r, 6, cfg);
      const ref64::Result ref = ref64::ms_eden(x, r, 6, chunk);
      const ref64::Agreement a = ref64::compare(q.dequantize(), ref, 1e-5);
      EXPECT_EQ(a.mismatched, 0) << "chunk " << chunk << " n " << n;
      EXPECT_LT(a.ambiguous, x.size() / 50);
      EXPECT_NEAR(q.tensor_scale, ref.tensor_scale, 1e-5 * ref.tensor_scale);
    }
}

TEST(MsEden, LargestCorrectedScaleMapsTo256) {
  const Matrix x = random_matrix(64, 256, Dist::kLaplace, 2);
  const NVFP4Tensor q = quantize_ms_eden(MatrixRef(x, "x"), Rht(128, 1), 2);
  float top = 0;
  for (uint8_t s : q.scales) top = std::max(top, e4m3::decode(s));
  EXPECT_EQ(top, 256.0f);
}

// Mean over n draws, each with fresh rotation and rounding seeds, un-rotated.
double bias_ratio(const Matrix& x, int n, const MsEdenConfig& cfg, double* single_out = nullptr) {
  const DrawErrors e = mean_of_draws(x, n, [&](uint64_t k) {
    const Rht r(128, 500 + k);
    const Matrix y = quantize_ms_eden(MatrixRef(x, "x"), r, 900 + k, cfg).dequantize();
    return rht_inverse(MatrixRef(y, "y"), r);
  });
  if (single_out) *single_out = e.single;
  return e.mean * n / e.single;
}

TEST(MsEden, IsUnbiasedOnGaussianDataAndBeatsSrByTwo) {
  const Matrix x = random_matrix(32, 1024, Dist::kGaussian, 8);
  double single;
  const double r = bias_ratio(x, 256, {}, &single);
  EXPECT_GT(r, 0.7);
  EXPECT_LT(r, 1.3);
  EXPECT_GT(single, 0.0088);  // paper: 9.4e-3 per-16 correction
  EXPECT_LT(single, 0.0100);
}

TEST(MsEden, ResearchVariantsAreAlsoUnbiased) {
  const Matrix x = random_matrix(32, 512, Dist::kGaussian, 8);
  MsEdenConfig cfg;
  cfg.group = EdenGroup::kChunk;
  cfg.tensor_scale = EdenTensorScale::kRotatedAmax;
  const double r = bias_ratio(x, 128, cfg);
  EXPECT_GT(r, 0.7);
  EXPECT_LT(r, 1.3);
}

TEST(MsEden, AllZeroTensorGivesZeroCodesAndFiniteScales) {
  const NVFP4Tensor q = quantize_ms_eden(MatrixRef(Matrix(4, 256), "z"), Rht(128, 1), 1);
  EXPECT_TRUE(std::isfinite(q.tensor_scale));
  for (uint8_t b : q.packed) EXPECT_EQ(b, 0);
  for (uint8_t s : q.scales) EXPECT_EQ(e4m3::decode(s), 0.0f);
}

TEST(MsEden, BadInputIsNamed) {
  try {
    quantize_ms_eden(MatrixRef(Matrix(4, 64), "dY"), Rht(128, 1), 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dY"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("multiple of 128"), std::string::npos);
  }
  Matrix x(2, 128);
  x.at(1, 100) = INFINITY;
  try {
    quantize_ms_eden(MatrixRef(x, "dY"), Rht(128, 1), 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Inf at [1, 100]"), std::string::npos);
  }
}

}  // namespace
}  // namespace q2::quant
