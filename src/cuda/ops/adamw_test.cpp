// GPU AdamW (adamw.cu): bit-identical to the CPU backend's update, with and without a
// gradient scale (clipping).
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <string>

#include "cuda/ops/test_util.h"
#include "model/backend.h"
#include "quant/distributions.h"

namespace q2::cuda::ops::test {
namespace {

TEST(GpuAdamW, BitIdenticalToCpuBackend) {
  REQUIRE_GPU();
  auto cpu = model::make_cpu_backend();
  const int64_t rows = 317, cols = 331;
  for (const bool decay : {true, false}) {
    Matrix w = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 120, 0.02);
    Matrix g = quant::random_matrix(rows, cols, quant::Dist::kStudent3, 121, 1e-3);
    Matrix m = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 122, 1e-3);
    Matrix v = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 123, 1e-3);
    for (float& x : v.data) x = x * x;
    const model::AdamWHyper h{3e-4, 0.9, 0.95, 1e-8, 0.1, 7, decay ? 0.37f : 1.0f};
    auto gw = to_dev(w), gg = to_dev(g), gm = to_dev(m), gv = to_dev(v);
    adamw(gw.get(), gg.get(), gm.get(), gv.get(), rows * cols, h, decay);

    model::Tensor tw = cpu->alloc(rows, cols, model::Role::kParam), tg = cpu->alloc(rows, cols, model::Role::kParam),
                  tm = cpu->alloc(rows, cols, model::Role::kParam), tv = cpu->alloc(rows, cols, model::Role::kParam);
    cpu->upload(w, tw);
    cpu->upload(g, tg);
    cpu->upload(m, tm);
    cpu->upload(v, tv);
    cpu->adamw(tw, tg, tm, tv, h, decay);
    const std::string what = decay ? "adamw (decay)" : "adamw";
    expect_bits_equal(from_dev(gw, rows, cols), cpu->download(tw), what + " w");
    expect_bits_equal(from_dev(gm, rows, cols), cpu->download(tm), what + " m");
    expect_bits_equal(from_dev(gv, rows, cols), cpu->download(tv), what + " v");
    const double ssq = cpu->sum_squares({&tw})[0];  // sequential float64 sum: equal up to the order
    EXPECT_NEAR(sum_squares(gw.get(), rows * cols), ssq, 1e-12 * ssq) << "sum_squares after " << what;
  }
}

}  // namespace
}  // namespace q2::cuda::ops::test
