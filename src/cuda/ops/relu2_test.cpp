// GPU ReLU^2 (relu2.cu) against the CPU reference: the same float32 operations, so each GPU
// value is the CPU's rounded once to BF16, bit for bit.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

// h ~ N(0, scale^2) rounded to BF16, with exact zeros and negative zeros mixed in.
void check_relu2(int64_t T, int64_t h, double scale, uint64_t seed) {
  const std::string what =
      "relu2 [" + std::to_string(T) + ", " + std::to_string(h) + "] scale " + std::to_string(scale);
  Matrix x = random_bf16(T, h, seed, scale);
  for (int64_t i = 0; i < x.size(); i += 17) x.data[i] = i % 34 ? 0.0f : -0.0f;
  const Matrix dg = random_bf16(T, h, seed + 1);
  auto gh = to_dev_bf16(x);
  auto gdg = to_dev_bf16(dg);
  DeviceBuffer<bf16> g(T * h), dh(T * h);
  poison(g);
  poison(dh);
  relu2_forward(gh.get(), T * h, g.get());
  relu2_backward(gdg.get(), gh.get(), T * h, dh.get());
  Matrix rg(T, h), rdh(T, h);
  model::cpu::relu2_forward(x, rg);
  model::cpu::relu2_backward(dg, x, rdh);
  const Matrix gg = from_dev(g, T, h), gdh = from_dev(dh, T, h);
  expect_bits_equal(gg, q2::bf16::round(rg), what + " g");
  expect_bits_equal(gdh, q2::bf16::round(rdh), what + " dh");
  expect_finite(gg, what + " g");
  expect_finite(gdh, what + " dh");
}

TEST(GpuRelu2, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  check_relu2(3 * 128 + 7, 1024, 1.0, 90);  // 16-byte body only
  check_relu2(3 * 128 + 7, 37, 2.0, 92);    // odd size: body and a scalar tail
  check_relu2(1, 5, 1.0, 94);               // tail only
  check_relu2(64, 256, 1e18, 96);           // large values: 1e36 stays finite in BF16
}

// Offsets into a buffer that break 16-byte alignment take the scalar path.
TEST(GpuRelu2, UnalignedPointersMatchCpu) {
  REQUIRE_GPU();
  const int64_t n = 1001;
  const Matrix x = random_bf16(1, n + 1, 98), dg = random_bf16(1, n + 1, 99);
  auto gh = to_dev_bf16(x);
  auto gdg = to_dev_bf16(dg);
  DeviceBuffer<bf16> g(n + 1), dh(n + 1);
  relu2_forward(gh.get() + 1, n, g.get() + 1);
  relu2_backward(gdg.get() + 1, gh.get() + 1, n, dh.get() + 1);
  Matrix xs(1, n), dgs(1, n), rg(1, n), rdh(1, n);
  std::copy(x.data.begin() + 1, x.data.end(), xs.data.begin());
  std::copy(dg.data.begin() + 1, dg.data.end(), dgs.data.begin());
  model::cpu::relu2_forward(xs, rg);
  model::cpu::relu2_backward(dgs, xs, rdh);
  Matrix gg = from_dev(g, 1, n + 1), gdh = from_dev(dh, 1, n + 1);
  gg.data.erase(gg.data.begin());
  gdh.data.erase(gdh.data.begin());
  gg.cols = gdh.cols = n;
  expect_bits_equal(gg, q2::bf16::round(rg), "relu2 unaligned g");
  expect_bits_equal(gdh, q2::bf16::round(rdh), "relu2 unaligned dh");
}

}  // namespace
}  // namespace q2::cuda::ops::test
