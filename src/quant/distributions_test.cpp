#include "quant/distributions.h"

#include <gtest/gtest.h>

namespace q2::quant {
namespace {

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
}  // namespace q2::quant
