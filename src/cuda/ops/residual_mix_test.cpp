// GPU resid / x0 lambda mix (residual_mix.cu) against the CPU reference: y, dL/dx and dx0 are
// the CPU's float32 results rounded once to BF16, bit for bit; the lambdas' gradients are float64
// sums in another order, so within a float32 rounding of the CPU's.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

// Layer `layer` of lambda vectors of `layers` entries; x ~ N(0, scale^2) and x0 ~ N(0, (scale / 2)^2).
void check_mix(int64_t T, int64_t d, int64_t layers, int64_t layer, double scale, uint64_t seed) {
  const std::string what = "residual_mix [" + std::to_string(T) + ", " + std::to_string(d) + "] layer " +
                           std::to_string(layer) + " scale " + std::to_string(scale);
  const Matrix x = random_bf16(T, d, seed, scale), x0 = random_bf16(T, d, seed + 1, 0.5 * scale);
  const Matrix a = random_bf16(1, layers, seed + 2), b = random_bf16(1, layers, seed + 3);
  const Matrix dy = random_bf16(T, d, seed + 4), dx0_in = random_bf16(T, d, seed + 5);
  const Matrix da_in = random_bf16(1, layers, seed + 6), db_in = random_bf16(1, layers, seed + 7);
  auto gx = to_dev_bf16(x);
  auto gx0 = to_dev_bf16(x0);
  auto ga = to_dev(a);
  auto gb = to_dev(b);
  DeviceBuffer<bf16> y(T * d);
  poison(y);
  residual_mix_forward(gx.get(), gx0.get(), ga.get(), gb.get(), layer, T, d, y.get());
  Matrix ry(T, d);
  model::cpu::residual_mix_forward(x, x0, a.data[layer], b.data[layer], ry);
  const Matrix gy = from_dev(y, T, d);
  expect_bits_equal(gy, q2::bf16::round(ry), what + " y");
  expect_finite(gy, what + " y");

  auto gdxy = to_dev_bf16(dy);
  auto gdx0 = to_dev_bf16(dx0_in);
  auto gda = to_dev(da_in);
  auto gdb = to_dev(db_in);
  residual_mix_backward(gdxy.get(), gx.get(), gx0.get(), ga.get(), gb.get(), layer, T, d, gdx0.get(), gda.get(),
                        gdb.get());
  Matrix rdxy = dy, rdx0 = dx0_in, rda = da_in, rdb = db_in;
  model::cpu::residual_mix_backward(rdxy, x, x0, a.data[layer], b.data[layer], rdx0, rda.data[layer],
                                    rdb.data[layer]);
  const Matrix gdx = from_dev(gdxy, T, d), gdx0m = from_dev(gdx0, T, d);
  expect_bits_equal(gdx, q2::bf16::round(rdxy), what + " dx");
  expect_bits_equal(gdx0m, q2::bf16::round(rdx0), what + " dx0");
  expect_finite(gdx, what + " dx");
  expect_finite(gdx0m, what + " dx0");
  // The other layers' entries are untouched; this layer's agree up to the float64 sums' order
  // and the two float32 roundings (of the sum, then of the accumulation): 2^-22 of the sum of
  // |terms| plus the entry accumulated into.
  double abs_a = std::fabs(da_in.data[layer]), abs_b = std::fabs(db_in.data[layer]);
  for (int64_t i = 0; i < dy.size(); ++i) {
    abs_a += std::fabs(static_cast<double>(dy.data[i]) * x.data[i]);
    abs_b += std::fabs(static_cast<double>(dy.data[i]) * x0.data[i]);
  }
  const Matrix gdam = from_dev(gda, 1, layers), gdbm = from_dev(gdb, 1, layers);
  expect_close(gdam, rda, 0, 0x1p-22 * abs_a, what + " da");
  expect_close(gdbm, rdb, 0, 0x1p-22 * abs_b, what + " db");
  for (int64_t l = 0; l < layers; ++l)
    if (l != layer) {
      EXPECT_EQ(gdam.data[l], da_in.data[l]) << what << ": da of layer " << l;
      EXPECT_EQ(gdbm.data[l], db_in.data[l]) << what << ": db of layer " << l;
    }
}

TEST(GpuResidualMix, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  check_mix(3 * 128 + 7, 256, 4, 2, 1.0, 100);  // 16-byte paths, rows not a multiple of the 8 per block
  check_mix(3 * 128 + 7, 100, 3, 0, 1.0, 110);  // d % 8 != 0: scalar rows, flat body and tail
  check_mix(5, 37, 1, 0, 1.0, 120);             // fewer rows than a block, odd width
  check_mix(2000, 64, 20, 19, 1.0, 130);        // more rows than the final block's 1024 threads
  check_mix(64, 264, 2, 1, 1e30, 140);          // large values (lambda gradients near 1e32 stay finite)
}

// Layer 0 passes the same tensor as x and x0 (the model's x_pre of layer 0 is x0).
TEST(GpuResidualMix, XAndX0MayBeTheSameTensor) {
  REQUIRE_GPU();
  const int64_t T = 130, d = 72;
  const Matrix x = random_bf16(T, d, 150), a = random_bf16(1, 2, 151), b = random_bf16(1, 2, 152);
  const Matrix dy = random_bf16(T, d, 153);
  auto gx = to_dev_bf16(x);
  auto ga = to_dev(a);
  auto gb = to_dev(b);
  DeviceBuffer<bf16> y(T * d), dx0(T * d);
  residual_mix_forward(gx.get(), gx.get(), ga.get(), gb.get(), 0, T, d, y.get());
  check(cudaMemset(dx0.get(), 0, dx0.bytes()), "clear dx0");
  auto gdy = to_dev_bf16(dy);
  DeviceBuffer<float> da(2), db(2);
  check(cudaMemset(da.get(), 0, da.bytes()), "clear da");
  check(cudaMemset(db.get(), 0, db.bytes()), "clear db");
  residual_mix_backward(gdy.get(), gx.get(), gx.get(), ga.get(), gb.get(), 0, T, d, dx0.get(), da.get(), db.get());
  Matrix ry(T, d), rdy = dy, rdx0(T, d), rda(1, 2), rdb(1, 2);
  model::cpu::residual_mix_forward(x, x, a.data[0], b.data[0], ry);
  model::cpu::residual_mix_backward(rdy, x, x, a.data[0], b.data[0], rdx0, rda.data[0], rdb.data[0]);
  expect_bits_equal(from_dev(y, T, d), q2::bf16::round(ry), "aliased y");
  expect_bits_equal(from_dev(gdy, T, d), q2::bf16::round(rdy), "aliased dx");
  expect_bits_equal(from_dev(dx0, T, d), q2::bf16::round(rdx0), "aliased dx0");
  // x and x0 are equal: the two lambda gradients are the same sum.
  const Matrix gda = from_dev(da, 1, 2), gdb = from_dev(db, 1, 2);
  EXPECT_EQ(gda.data[0], gdb.data[0]);
  double abs_a = 0;
  for (int64_t i = 0; i < dy.size(); ++i) abs_a += std::fabs(static_cast<double>(dy.data[i]) * x.data[i]);
  expect_close(gda, rda, 0, 0x1p-22 * abs_a, "aliased da");
}

}  // namespace
}  // namespace q2::cuda::ops::test
