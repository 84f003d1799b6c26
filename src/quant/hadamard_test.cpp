#include "quant/hadamard.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "quant/distributions.h"
#include "quant/reference64.h"

namespace q2::quant {
namespace {

TEST(Hadamard, ForwardEqualsTheFloat64MatrixProduct) {
  for (int n : {16, 32, 64, 128}) {
    const Matrix x = random_matrix(5, 256, Dist::kGaussian, n);
    const Rht r(n, 42 + n);
    const Matrix y = rht_forward(MatrixRef(x, "x"), r);
    const std::vector<double> want = ref64::rht(x, r);
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(y.data[i], want[i], 1e-6 * (1 + std::fabs(want[i]))) << n;
  }
}

TEST(Hadamard, IsOrthogonalAndInvertsTo1e6) {
  for (int n : {16, 32, 64, 128}) {
    const Matrix x = random_matrix(16, 512, Dist::kStudent3, 7);
    const Rht r(n, 99);
    const Matrix y = rht_forward(MatrixRef(x, "x"), r);
    const Matrix back = rht_inverse(MatrixRef(y, "y"), r);
    for (int64_t row = 0; row < x.rows; ++row) {
      double nx = 0, ny = 0, diff = 0;
      for (int64_t c = 0; c < x.cols; ++c) {
        nx += std::pow(x.at(row, c), 2.0);
        ny += std::pow(y.at(row, c), 2.0);
        diff += std::pow(back.at(row, c) - x.at(row, c), 2.0);
      }
      EXPECT_NEAR(ny / nx, 1.0, 1e-6) << n;
      EXPECT_LT(std::sqrt(diff / nx), 1e-6) << n;
    }
  }
}

TEST(Hadamard, SignsComeFromTheSeed) {
  int negatives = 0, differ = 0;
  for (uint64_t s = 0; s < 64; ++s) {
    const Rht a(128, s), b(128, s + 1000);
    for (int i = 0; i < 128; ++i) {
      negatives += a.sign(i) < 0;
      differ += a.sign(i) != b.sign(i);
    }
    const Rht again(128, s);
    for (int i = 0; i < 128; ++i) ASSERT_EQ(a.sign(i), again.sign(i));
  }
  // 8192 fair coins: within about 5 standard deviations (45) of half.
  EXPECT_NEAR(negatives, 4096, 230);
  EXPECT_NEAR(differ, 4096, 230);
}

TEST(Hadamard, RejectsBadSizesAndRows) {
  EXPECT_THROW(Rht(8, 0), Error);
  EXPECT_THROW(Rht(256, 0), Error);
  const Matrix x(2, 96);
  try {
    rht_forward(MatrixRef(x, "grad_out"), Rht(64, 0));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("grad_out"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("multiple of 64"), std::string::npos);
  }
}

}  // namespace
}  // namespace q2::quant
