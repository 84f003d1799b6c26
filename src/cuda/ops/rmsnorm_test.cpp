// GPU RMSNorm (rmsnorm.cu) against the CPU reference: y and dx within u, dw bit-exact; the same
// for the norm without a gain (a null w), and the per-head norm of QK norm (cpu::head_rmsnorm_*).
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"
#include "quant/distributions.h"

namespace q2::cuda::ops::test {
namespace {

TEST(GpuRmsNorm, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const int64_t d : {768, 100}) {  // 16-byte path and scalar path
    const int64_t T = 3 * 128 + 7;
    const Matrix x = random_bf16(T, d, 10, 2.0);
    const Matrix w = quant::random_matrix(1, d, quant::Dist::kGaussian, 11);
    auto dx = to_dev_bf16(x);
    auto dw = to_dev(w);
    DeviceBuffer<bf16> y(T * d);
    DeviceBuffer<float> rstd(T);
    poison(y);
    poison(rstd);
    rmsnorm_forward(dx.get(), dw.get(), T, d, 1e-5, y.get(), rstd.get());
    Matrix ry(T, d);
    std::vector<float> rr;
    model::cpu::rmsnorm_forward(x, w.data.data(), 1e-5, ry, rr);
    Matrix rstd_ref(1, T);
    rstd_ref.data = rr;
    // rstd: the same float64 formula up to the summation order.
    expect_close(from_dev(rstd, 1, T), rstd_ref, 2.0 / (1 << 23), 0, "rmsnorm rstd d=" + std::to_string(d));
    expect_close(from_dev(y, T, d), ry, kU * 1.001, 0, "rmsnorm y d=" + std::to_string(d));
  }
}

TEST(GpuRmsNorm, BackwardMatchesCpuAndDwIsBitExact) {
  REQUIRE_GPU();
  for (const int64_t d : {1024, 100}) {
    const int64_t T = 3 * 128 + 7;
    const Matrix x = random_bf16(T, d, 12, 2.0), dy = random_bf16(T, d, 13);
    const Matrix w = quant::random_matrix(1, d, quant::Dist::kGaussian, 14);
    Matrix dx = random_bf16(T, d, 15);  // accumulated into
    Matrix dw = quant::random_matrix(1, d, quant::Dist::kGaussian, 16);
    Matrix y(T, d);
    std::vector<float> rstd;
    model::cpu::rmsnorm_forward(x, w.data.data(), 1e-5, y, rstd);
    auto gx = to_dev_bf16(x);
    auto gdy = to_dev_bf16(dy);
    auto gw = to_dev(w);
    auto grstd = to_dev(rstd);
    auto gdx = to_dev_bf16(dx);
    auto gdw = to_dev(dw);
    rmsnorm_backward(gdy.get(), gx.get(), gw.get(), grstd.get(), T, d, gdx.get(), gdw.get());
    model::cpu::rmsnorm_backward(dy, x, w.data.data(), rstd, dx, dw.data.data());
    expect_close(from_dev(gdx, T, d), dx, kU * 1.001, 1e-6 * max_abs(dx), "rmsnorm dx d=" + std::to_string(d));
    expect_bits_equal(from_dev(gdw, 1, d), dw, "rmsnorm dw d=" + std::to_string(d));
  }
}

// The norm without a gain: w and dw null on both sides. `scale` sizes the inputs (1e30: large
// values stay finite, the sums of squares being float64; expect_close fails on NaN).
void check_gainless(int64_t T, int64_t d, double scale, uint64_t seed) {
  const std::string what = "gainless rmsnorm T=" + std::to_string(T) + " d=" + std::to_string(d) +
                           " scale=" + std::to_string(scale);
  const Matrix x = random_bf16(T, d, seed, 2.0 * scale);
  const Matrix dy = random_bf16(T, d, seed + 1);
  Matrix dx = random_bf16(T, d, seed + 2);  // accumulated into
  auto gx = to_dev_bf16(x);
  DeviceBuffer<bf16> y(T * d);
  DeviceBuffer<float> rstd(T);
  poison(y);
  poison(rstd);
  rmsnorm_forward(gx.get(), nullptr, T, d, 1e-5, y.get(), rstd.get());
  Matrix ry(T, d);
  std::vector<float> rr;
  model::cpu::rmsnorm_forward(x, nullptr, 1e-5, ry, rr);
  Matrix rstd_ref(1, T);
  rstd_ref.data = rr;
  expect_close(from_dev(rstd, 1, T), rstd_ref, 2.0 / (1 << 23), 0, what + " rstd");
  expect_close(from_dev(y, T, d), ry, kU * 1.001, 0, what + " y");  // fails on NaN and infinities too

  auto gdy = to_dev_bf16(dy);
  auto gdx = to_dev_bf16(dx);
  auto grstd = to_dev(rr);
  rmsnorm_backward(gdy.get(), gx.get(), nullptr, grstd.get(), T, d, gdx.get(), nullptr);
  model::cpu::rmsnorm_backward(dy, x, nullptr, rr, dx, nullptr);
  expect_close(from_dev(gdx, T, d), dx, kU * 1.001, 1e-6 * max_abs(dx), what + " dx");
}

TEST(GpuRmsNorm, WithoutGainMatchesCpu) {
  REQUIRE_GPU();
  check_gainless(3 * 128 + 7, 768, 1.0, 20);  // 16-byte path, rows not a multiple of the 8 per block
  check_gainless(3 * 128 + 7, 100, 1.0, 23);  // scalar path
  check_gainless(5, 8, 1.0, 26);              // fewer rows than a block, one vector per row
  check_gainless(33, 1, 1.0, 29);             // one column
  check_gainless(64, 264, 1e30, 32);          // large values
  check_gainless(64, 77, 1e-30, 35);          // tiny values (eps dominates)
}

TEST(GpuRmsNorm, WithoutGainNeedsNoGainGradient) {
  REQUIRE_GPU();
  DeviceBuffer<bf16> x(8), dy(8), dx(8);
  DeviceBuffer<float> w(8), dw(8), rstd(1);
  EXPECT_THROW(rmsnorm_backward(dy.get(), x.get(), nullptr, rstd.get(), 1, 8, dx.get(), dw.get()), Error);
  EXPECT_THROW(rmsnorm_backward(dy.get(), x.get(), w.get(), rstd.get(), 1, 8, dx.get(), nullptr), Error);
}

// QK norm's per-head norm, forward then backward, on a [T, ld] tensor whose heads start at col0:
// the columns outside the heads stay as they were.
void check_heads(int64_t T, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim, double scale,
                 uint64_t seed) {
  const std::string what = "head_rmsnorm T=" + std::to_string(T) + " ld=" + std::to_string(ld) + " col0=" +
                           std::to_string(col0) + " heads=" + std::to_string(n_heads) + "x" + std::to_string(head_dim) +
                           " scale=" + std::to_string(scale);
  const Matrix x = random_bf16(T, ld, seed, 2.0 * scale);
  auto gx = to_dev_bf16(x);
  DeviceBuffer<float> rstd(T * n_heads);
  poison(rstd);
  head_rmsnorm_forward(gx.get(), T, ld, col0, n_heads, head_dim, 1e-6, rstd.get());
  Matrix ry = x;
  std::vector<float> rr;
  model::cpu::head_rmsnorm_forward(ry, col0, n_heads, head_dim, 1e-6, rr);
  Matrix rstd_ref(1, T * n_heads);
  rstd_ref.data = rr;
  expect_close(from_dev(rstd, 1, T * n_heads), rstd_ref, 2.0 / (1 << 23), 0, what + " rstd");
  const Matrix gy = from_dev(gx, T, ld);
  expect_close(gy, ry, kU * 1.001, 0, what + " y");  // untouched columns: equal; NaN fails

  // Backward from the GPU's (BF16) output, as the model does; dy's other columns stay.
  const Matrix dy = random_bf16(T, ld, seed + 1);
  auto gdy = to_dev_bf16(dy);
  auto grstd = to_dev(rr);
  head_rmsnorm_backward(gdy.get(), gx.get(), T, ld, col0, n_heads, head_dim, grstd.get());
  Matrix rdx = dy;
  model::cpu::head_rmsnorm_backward(rdx, gy, col0, n_heads, head_dim, rr);
  expect_close(from_dev(gdy, T, ld), rdx, kU * 1.001, 1e-6 * max_abs(rdx), what + " dx");
}

TEST(GpuHeadRmsNorm, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  // The model's use: q and k heads of qkv [T, 3d] (tiny: 4 heads of 64), and GQA-like widths.
  check_heads(3 * 128 + 7, 3 * 256, 0, 8, 64, 1.0, 40);
  check_heads(200, 3 * 512, 0, 8, 128, 1.0, 43);
  // Heads inside the row: 16-byte path with an offset, and scalar paths (odd head_dim, odd col0).
  check_heads(37, 640, 128, 3, 128, 1.0, 46);
  check_heads(37, 130, 3, 3, 37, 1.0, 49);
  check_heads(37, 100, 4, 4, 24, 1.0, 52);  // col0 not a multiple of 8: scalar
  check_heads(1, 64, 0, 1, 64, 1.0, 55);    // one row, one head: fewer (row, head) pairs than warps
  check_heads(11, 40, 0, 5, 8, 1.0, 58);    // heads of one 16-byte vector
  // Large and tiny values stay finite.
  check_heads(64, 3 * 256, 0, 8, 64, 1e30, 61);
  check_heads(64, 3 * 256, 0, 8, 64, 1e-30, 64);
}

TEST(GpuHeadRmsNorm, RefusesHeadsOutsideTheColumns) {
  REQUIRE_GPU();
  DeviceBuffer<bf16> x(4 * 64);
  DeviceBuffer<float> rstd(8);
  EXPECT_THROW(head_rmsnorm_forward(x.get(), 4, 64, 8, 2, 32, 1e-6, rstd.get()), Error);
  EXPECT_THROW(head_rmsnorm_backward(x.get(), x.get(), 4, 64, -1, 1, 32, rstd.get()), Error);
}

}  // namespace
}  // namespace q2::cuda::ops::test
