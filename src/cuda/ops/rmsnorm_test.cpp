// GPU RMSNorm (rmsnorm.cu) against the CPU reference: y and dx within u, dw bit-exact.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

}  // namespace
}  // namespace q2::cuda::ops::test
