#include "linear/linear.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "quant/distributions.h"
#include "quant/philox.h"

namespace q2::linear {
namespace {

struct Fixture {
  std::unique_ptr<gemm::Backend> backend = gemm::make_cpu_backend();
  Matrix x = quant::random_matrix(128, 64, quant::Dist::kGaussian, 1);
  Matrix w = quant::random_matrix(128, 64, quant::Dist::kGaussian, 2, 0.125);
  Matrix dy = quant::random_matrix(128, 128, quant::Dist::kStudent3, 3);

  Trace trace_of(const std::string& scheme, Saved* saved_out = nullptr, int hadamard = 0) {
    const Linear layer(scheme_by_name(scheme, hadamard), *backend, "l");
    Trace t;
    Saved saved;
    layer.forward(x, w, saved, &t);
    layer.backward(dy, saved, 7, &t);
    if (saved_out) *saved_out = std::move(saved);
    return t;
  }
};

TEST(LinearGraph, Quartet2) {
  Fixture f;
  Saved saved;
  const Trace t = f.trace_of("quartet2", &saved);
  const Trace want = {"fwd.x: four_over_six", "fwd.w: four_over_six", "saved.x: nvfp4", "saved.w: nvfp4",
                      "dgrad.a(dY): ms_eden h128", "dgrad.b(W^T): ms_eden h128", "wgrad.a(dY^T): ms_eden h128",
                      "wgrad.b(X^T): ms_eden h128"};
  EXPECT_EQ(t, want);
  // Saved packed: 4 bits per element plus one byte per 16 plus the tensor scale.
  EXPECT_EQ(saved.x.bytes(), size_t{128 * 64 / 2 + 128 * 64 / 16 + 4});
  EXPECT_EQ(saved.w.bytes(), size_t{128 * 64 / 2 + 128 * 64 / 16 + 4});
}

TEST(LinearGraph, NvidiaSrTetrajetBf16AndAblations) {
  Fixture f;
  EXPECT_EQ(f.trace_of("nvidia"),
            (Trace{"fwd.x: rtn", "fwd.w: rtn_16x16", "saved.x: bf16", "saved.w: nvfp4", "dgrad.a(dY): sr",
                   "dgrad.b(W^T): forward_reuse", "wgrad.a(dY^T): sr h16", "wgrad.b(X^T): rtn h16"}));
  EXPECT_EQ(f.trace_of("sr"), (Trace{"fwd.x: bf16", "fwd.w: bf16", "saved.x: bf16", "saved.w: bf16", "dgrad.a(dY): sr",
                                     "dgrad.b(W^T): sr", "wgrad.a(dY^T): sr", "wgrad.b(X^T): sr"}));
  EXPECT_EQ(f.trace_of("tetrajet2"),
            (Trace{"fwd.x: rtn", "fwd.w: rtn", "saved.x: nvfp4", "saved.w: nvfp4", "dgrad.a(dY): sr h32",
                   "dgrad.b(W^T): sr h32", "wgrad.a(dY^T): sr h32", "wgrad.b(X^T): sr h32"}));
  EXPECT_EQ(f.trace_of("bf16"), (Trace{"fwd.x: bf16", "fwd.w: bf16", "saved.x: bf16", "saved.w: bf16",
                                       "dgrad.a(dY): bf16", "dgrad.b(W^T): bf16", "wgrad.a(dY^T): bf16",
                                       "wgrad.b(X^T): bf16"}));
  EXPECT_EQ(f.trace_of("quartet2_no46")[0], "fwd.x: rtn");
  const Trace fwd_only = f.trace_of("quartet2_fwd");
  EXPECT_EQ(fwd_only[0], "fwd.x: four_over_six");
  EXPECT_EQ(fwd_only[4], "dgrad.a(dY): bf16");
  const Trace bwd_only = f.trace_of("quartet2_bwd");
  EXPECT_EQ(bwd_only[0], "fwd.x: bf16");
  EXPECT_EQ(bwd_only[4], "dgrad.a(dY): ms_eden h128");
  EXPECT_EQ(f.trace_of("quartet2", nullptr, 32)[7], "wgrad.b(X^T): ms_eden h32");
}

TEST(LinearGraph, NvidiaReusesTheSquareBlockWeightExactly) {
  Fixture f;
  const Linear layer(scheme_by_name("nvidia"), *f.backend, "l");
  const gemm::OwnedOperand wq = layer.forward_w(f.w);
  const Matrix wt = transpose_square_blocks(*wq.fp4, "W").dequantize(), want = transpose(wq.values());
  EXPECT_EQ(wt.data, want.data);
}

TEST(LinearShapes, BadShapesAndNamesAreReported) {
  Fixture f;
  const Linear layer(scheme_by_name("quartet2"), *f.backend, "mlp.up");
  Saved saved;
  EXPECT_THROW(layer.forward(f.x, Matrix(128, 48), saved), Error);
  const Matrix x100 = quant::random_matrix(100, 64, quant::Dist::kGaussian, 1);
  layer.forward(x100, f.w, saved);
  try {
    layer.backward(quant::random_matrix(100, 128, quant::Dist::kGaussian, 1), saved, 0);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mlp.up"), std::string::npos);
    EXPECT_NE(m.find("token = 100 must be a multiple of 128"), std::string::npos) << m;
  }
  layer.forward(f.x, f.w, saved);
  EXPECT_THROW(layer.backward(Matrix(128, 16), saved, 0), Error);  // dY of the wrong shape
  try {
    scheme_by_name("quartet3");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("known: fp32, bf16, quartet2"), std::string::npos);
  }
  EXPECT_THROW(scheme_by_name("quartet2", 8), Error);
  EXPECT_THROW(scheme_by_name("quartet2", -16), Error);  // not silently the scheme's own
}

// With operands that are exact in BF16 (small dyadic numbers), the bf16 scheme must compute
// the exact gradients of L = sum(G * (X W^T)): compare against float64 central differences.
TEST(LinearBf16, BackwardMatchesFiniteDifferences) {
  const auto backend = gemm::make_cpu_backend();
  auto dyadic = [](int64_t r, int64_t c, uint64_t seed) {
    Matrix m(r, c);
    for (int64_t i = 0; i < m.size(); ++i)
      m.data[i] = static_cast<float>(static_cast<int>(philox::word(seed, philox::kData, i) % 33) - 16) / 8.0f;
    return m;
  };
  const Matrix x = dyadic(16, 32, 1), w = dyadic(8, 32, 2), g = dyadic(16, 8, 3);
  auto loss = [&](const Matrix& xx, const Matrix& ww) {
    double l = 0;
    for (int64_t i = 0; i < xx.rows; ++i)
      for (int64_t j = 0; j < ww.rows; ++j) {
        double y = 0;
        for (int64_t k = 0; k < xx.cols; ++k) y += static_cast<double>(xx.at(i, k)) * ww.at(j, k);
        l += g.at(i, j) * y;
      }
    return l;
  };
  const Linear layer(scheme_by_name("bf16"), *backend, "fd");
  Saved saved;
  layer.forward(x, w, saved);
  const Grads grads = layer.backward(g, saved, 0);
  const double h = 0.25;  // exact in binary; the loss is bilinear, so central differences are exact
  double num = 0, den = 0;
  auto check = [&](const Matrix& grad, const Matrix& param, auto loss_of) {
    for (int64_t i = 0; i < param.size(); ++i) {
      Matrix p = param, m = param;
      p.data[i] += h;
      m.data[i] -= h;
      const double fd = (loss_of(p) - loss_of(m)) / (2 * h);
      num += std::pow(grad.data[i] - fd, 2), den += fd * fd;
    }
  };
  check(grads.dx, x, [&](const Matrix& xx) { return loss(xx, w); });
  check(grads.dw, w, [&](const Matrix& ww) { return loss(x, ww); });
  EXPECT_LT(std::sqrt(num / den), 1e-6);
}

}  // namespace
}  // namespace q2::linear
