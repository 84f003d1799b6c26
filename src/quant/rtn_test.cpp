#include "quant/rtn.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/reference64.h"

namespace q2::quant {
namespace {

void expect_agrees(const NVFP4Tensor& q, const ref64::Result& ref) {
  const ref64::Agreement a = ref64::compare(q.dequantize(), ref, 1e-6);
  EXPECT_EQ(a.mismatched, 0);
  EXPECT_LT(a.ambiguous, static_cast<int64_t>(ref.value.size() / 100));  // the reference stays sharp
  EXPECT_NEAR(q.tensor_scale, ref.tensor_scale, 1e-6 * ref.tensor_scale);
}

TEST(Rtn, MatchesFloat64Rederivation) {
  for (Dist d : {Dist::kGaussian, Dist::kLaplace, Dist::kStudent3}) {
    const Matrix x = random_matrix(37, 256, d, 11);
    expect_agrees(quantize_rtn(MatrixRef(x, "x")), ref64::rtn(x, 6.0, 448.0));
    expect_agrees(quantize_rtn(MatrixRef(x, "x"), {6.0f / (17.0f / 16.0f), 448.0f}), ref64::rtn(x, 96.0 / 17.0, 448.0));
  }
}

TEST(FourOverSix, MatchesFloat64Rederivation) {
  for (Dist d : {Dist::kGaussian, Dist::kStudent3}) {
    const Matrix x = random_matrix(64, 512, d, 12);
    expect_agrees(quantize_four_over_six(MatrixRef(x, "x")), ref64::four_over_six(x));
  }
}

TEST(FourOverSix, LowersErrorAndTiesGoToSix) {
  const Matrix x = random_matrix(128, 256, Dist::kGaussian, 3);
  auto err = [&](const NVFP4Tensor& q) {
    const Matrix d = q.dequantize();
    double n = 0, s = 0;
    for (int64_t i = 0; i < x.size(); ++i) n += std::pow(d.data[i] - x.data[i], 2), s += x.data[i] * x.data[i];
    return n / s;
  };
  EXPECT_LT(err(quantize_four_over_six(MatrixRef(x, "x"))), err(quantize_rtn(MatrixRef(x, "x"))));

  // [6, 3, 0, ...] is exact under both candidates (scale 256 and 384 with t = 6/1536):
  // equal errors, so the scale must be candidate 6's.
  Matrix tie(1, 16);
  tie.at(0, 0) = 6.0f;
  tie.at(0, 1) = 3.0f;
  const NVFP4Tensor q = quantize_four_over_six(MatrixRef(tie, "tie"));
  EXPECT_EQ(e4m3::decode(q.scale(0, 0)), 256.0f);
  EXPECT_EQ(q.value(0, 0), 6.0f);
  EXPECT_EQ(q.value(0, 1), 3.0f);
}

TEST(Rtn, AllZeroTensorGivesZeroCodesAndFiniteScales) {
  const Matrix z(8, 64);
  for (const NVFP4Tensor& q : {quantize_rtn(MatrixRef(z, "z")), quantize_four_over_six(MatrixRef(z, "z"))}) {
    EXPECT_TRUE(std::isfinite(q.tensor_scale));
    for (uint8_t b : q.packed) EXPECT_EQ(b, 0);
    for (uint8_t s : q.scales) EXPECT_EQ(s, 0);
  }
}

TEST(Rtn, BadInputIsNamed) {
  Matrix x(4, 24);
  try {
    quantize_rtn(MatrixRef(x, "activations"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("activations"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("multiple of 16"), std::string::npos);
  }
  Matrix y(4, 32);
  y.at(2, 17) = NAN;
  try {
    quantize_four_over_six(MatrixRef(y, "weights"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weights"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("NaN at [2, 17]"), std::string::npos);
  }
  y.at(2, 17) = -INFINITY;
  EXPECT_THROW(quantize_rtn(MatrixRef(y, "w")), Error);
  EXPECT_THROW(quantize_rtn(MatrixRef(Matrix(0, 16), "empty")), Error);
}

}  // namespace
}  // namespace q2::quant
