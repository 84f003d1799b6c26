#include "eval/quant_error.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "quant/distributions.h"
#include "quant/error_stats.h"

namespace q2::eval {
namespace {

TEST(QuantError, ReportsEveryQuantizerWithTheExpectedOrdering) {
  const Matrix x = quant::random_matrix(128, 512, quant::Dist::kGaussian, 0);
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
  EXPECT_DOUBLE_EQ(quant::rel_sq_error(a, b, 3), 1.0 / 21.0);
  EXPECT_THROW(quant_error(Matrix(16, 128), 0, 0), Error);
  EXPECT_THROW(quant::parse_dist("cauchy"), Error);
}

}  // namespace
}  // namespace q2::eval
