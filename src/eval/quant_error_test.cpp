#include "eval/quant_error.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "eval/distributions.h"

namespace q2::eval {
namespace {

TEST(QuantError, ReportsEveryQuantizerWithTheExpectedOrdering) {
  const Matrix x = random_matrix(128, 512, Dist::kGaussian, 0);
  const auto rows = quant_error(x, 8, 0);
  ASSERT_EQ(rows.size(), quant_error_quantizers().size());
  auto get = [&](const std::string& n) {
    for (const auto& r : rows)
      if (r.quantizer == n) return r;
    throw std::runtime_error("missing " + n);
  };
  EXPECT_EQ(get("rtn").rel_mse, get("rtn").rel_mse_mean);
  EXPECT_LT(get("four_over_six").rel_mse, get("rtn").rel_mse);
  EXPECT_LT(get("ms_eden").rel_mse, 0.5 * get("sr").rel_mse);
  EXPECT_LT(get("ms_eden").rel_mse_mean, get("ms_eden").rel_mse / 4);  // averaging helps an unbiased estimator
}

TEST(QuantError, RelativeErrorAndBadArguments) {
  const float a[] = {1, 2, 3}, b[] = {1, 2, 4};
  EXPECT_DOUBLE_EQ(rel_sq_error(a, b, 3), 1.0 / 21.0);
  EXPECT_THROW(quant_error(Matrix(16, 128), 0, 0), Error);
  EXPECT_THROW(parse_dist("cauchy"), Error);
}

TEST(Distributions, AreDeterministicAndHaveUnitVariance) {
  for (Dist d : {Dist::kGaussian, Dist::kLaplace, Dist::kStudent3}) {
    const Matrix a = random_matrix(256, 256, d, 3), b = random_matrix(256, 256, d, 3);
    EXPECT_EQ(a.data, b.data);
    double s = 0;
    for (float v : a.data) s += static_cast<double>(v) * v;
    // Student-t(3) has variance 3 and a heavy tail; the others unit variance.
    EXPECT_NEAR(s / a.size(), d == Dist::kStudent3 ? 3.0 : 1.0, d == Dist::kStudent3 ? 1.0 : 0.03) << dist_name(d);
  }
}

}  // namespace
}  // namespace q2::eval
