// GPU elementwise ops (elementwise.cu): add, scale and conversion against one float32 rounding on the
// host, sum of squares against a float64 sum.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <vector>

#include "common/host_device.h"
#include "cuda/ops/test_util.h"
#include "quant/distributions.h"

namespace q2::cuda::ops::test {
namespace {

TEST(GpuElementwise, AddScaleConvert) {
  REQUIRE_GPU();
  const int64_t n = 1000003;  // odd: vector body and scalar tail
  const Matrix a = random_bf16(1, n, 80), b = random_bf16(1, n, 81, 0.5);
  auto ga = to_dev_bf16(a);
  auto gb = to_dev_bf16(b);
  DeviceBuffer<bf16> gsum(n);
  poison(gsum);
  add(ga.get(), gb.get(), n, gsum.get());
  const Matrix sum = from_dev(gsum, 1, n);
  for (int64_t i = 0; i < n; ++i) {
    const double exact = static_cast<double>(a.data[i]) + b.data[i];
    // One rounding of the exact sum; where the float sum is exact that is bf16::round of it.
    ASSERT_LE(std::fabs(sum.data[i] - exact), kU * std::fabs(exact)) << "add at " << i;
    if (static_cast<double>(a.data[i] + b.data[i]) == exact) {
      ASSERT_EQ(sum.data[i], q2::bf16::round(a.data[i] + b.data[i])) << "add at " << i;
    }
  }
  add(ga.get(), gb.get(), n, ga.get());  // in place: the same sums
  expect_bits_equal(from_dev(ga, 1, n), sum, "add in place");

  const Matrix x = quant::random_matrix(1, n, quant::Dist::kGaussian, 82);
  auto gx = to_dev(x);
  scale(gx.get(), n, 0.37f);
  Matrix xs = x;
  for (float& v : xs.data) v *= 0.37f;
  expect_bits_equal(from_dev(gx, 1, n), xs, "scale f32");

  auto gab = to_dev_bf16(a);
  scale(gab.get(), n, -1.7f);
  Matrix as = a;
  for (float& v : as.data) v = q2::bf16::round(v * -1.7f);
  expect_bits_equal(from_dev(gab, 1, n), as, "scale bf16");

  // float32 -> BF16 on random values plus exact ties, subnormals and the largest finite values.
  Matrix f = quant::random_matrix(1, n, quant::Dist::kGaussian, 83, 1e3);
  const uint32_t specials[] = {0x3F808000u, 0x3F818000u, 0x00008000u, 0x00018000u, 0x80000001u,
                               0x7F7FFFFFu, 0xFF7F0000u, 0x00000000u, 0x80000000u, 0x3F7FFFFFu};
  for (size_t i = 0; i < std::size(specials); ++i) f.data[i] = bits_float(specials[i]);
  auto gf = to_dev(f);
  DeviceBuffer<bf16> gfb(n);
  poison(gfb);
  convert(gf.get(), gfb.get(), n);
  const Matrix fr = q2::bf16::round(f);
  const Matrix fb = from_dev(gfb, 1, n);
  expect_bits_equal(fb, fr, "convert f32->bf16");
  DeviceBuffer<float> back(n);
  poison(back);
  convert(gfb.get(), back.get(), n);
  expect_bits_equal(from_dev(back, 1, n), fr, "convert bf16->f32");
}

TEST(GpuElementwise, SumSquaresIsDeterministicFloat64) {
  REQUIRE_GPU();
  for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{1000003}, int64_t{20000000}}) {
    const Matrix x = quant::random_matrix(1, n, quant::Dist::kStudent3, 90, 3.0);
    auto gx = to_dev(x);
    const double got = sum_squares(gx.get(), n), again = sum_squares(gx.get(), n);
    double ref = 0;
    for (float v : x.data) ref += static_cast<double>(v) * v;
    EXPECT_EQ(got, again) << "n=" << n;
    EXPECT_NEAR(got, ref, 1e-12 * ref) << "n=" << n;
  }
  EXPECT_EQ(sum_squares(nullptr, 0), 0.0);
}

// A model's gradient norm reads every tensor's sum back at once: each result is its own array's.
TEST(GpuElementwise, SumSquaresEachReturnsEveryArraysOwnSum) {
  REQUIRE_GPU();
  const std::vector<int64_t> sizes = {5, 0, 1000003, 64, 3};
  std::vector<DeviceBuffer<float>> dev;
  std::vector<const float*> x;
  std::vector<double> want;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const Matrix m = quant::random_matrix(1, std::max<int64_t>(sizes[i], 1), quant::Dist::kGaussian, 91 + i, 1.0 + i);
    dev.push_back(to_dev(m));
    x.push_back(sizes[i] ? dev.back().get() : nullptr);
    want.push_back(sum_squares(x.back(), sizes[i]));
  }
  std::vector<double> got(sizes.size(), -1.0);
  sum_squares_each(x.data(), sizes.data(), static_cast<int64_t>(sizes.size()), got.data());
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(got[i], want[i]) << "array " << i << " of " << sizes[i];
  EXPECT_EQ(got[1], 0.0);
}

}  // namespace
}  // namespace q2::cuda::ops::test
