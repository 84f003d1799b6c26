#include "model/cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "common/error.h"
#include "quant/distributions.h"

// Each op of the CPU reference against an independent float64 re-implementation written here,
// each backward against central finite differences of that float64 reference.
//
// Finite differences: h = 1e-5 on O(1) inputs of a float64 function gives a truncation error
// ~h^2 ~ 1e-10 and a cancellation error ~1e-16 / h ~ 1e-11, so the numeric gradient is exact
// to ~1e-9: the tolerances below are set by the op's own float32 arithmetic (unit roundoff
// 2^-24 ~ 6e-8, reductions here at most ~70 terms long), i.e. a few 1e-6, and stay orders of
// magnitude below the O(0.1..1) errors a wrong formula, scale, sign or index would give.

namespace q2::model {
namespace {

using quant::Dist;
using quant::random_matrix;

constexpr double kU = 0x1p-24;  // float32 unit roundoff
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<double> to64(const Matrix& m) { return {m.data.begin(), m.data.end()}; }

// Every element within abs_tol + rel_tol * |want| (NaN fails); names the worst element.
::testing::AssertionResult all_near(const float* got, const std::vector<double>& want, double abs_tol,
                                    double rel_tol) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(got[i] - want[i]) / (abs_tol + rel_tol * std::fabs(want[i]));
    if (std::isnan(e)) return ::testing::AssertionFailure() << "element " << i << " is NaN";
    if (e > worst) worst = e, at = i;
  }
  if (worst <= 1) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << at << ": got " << got[at] << ", want " << want[at] << " ("
                                       << worst << "x the tolerance)";
}
::testing::AssertionResult all_near(const Matrix& got, const std::vector<double>& want, double abs_tol,
                                    double rel_tol) {
  if (static_cast<size_t>(got.size()) != want.size()) return ::testing::AssertionFailure() << "size differs";
  return all_near(got.data.data(), want, abs_tol, rel_tol);
}

// Central differences of the float64 function f at x, every coordinate.
std::vector<double> numeric_grad(std::vector<double> x, const std::function<double(const std::vector<double>&)>& f) {
  constexpr double h = 1e-5;
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<uint32_t> random_ids(int64_t n, uint32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<uint32_t>(rng() % vocab);
  return ids;
}

// ---------------------------------------------------------------- float64 references

std::vector<double> rmsnorm_ref(const std::vector<double>& x, const std::vector<double>& w, int64_t rows,
                                int64_t cols, double eps, std::vector<double>* rstd = nullptr) {
  std::vector<double> y(x.size());
  if (rstd) rstd->resize(static_cast<size_t>(rows));
  for (int64_t t = 0; t < rows; ++t) {
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += x[t * cols + c] * x[t * cols + c];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
    if (rstd) (*rstd)[t] = r;
    for (int64_t c = 0; c < cols; ++c) y[t * cols + c] = x[t * cols + c] * r * w[c];
  }
  return y;
}

// Rotate-half rope on columns [col0, col0 + heads * hd) of a [rows, cols] matrix, pos = t % seq.
std::vector<double> rope_ref(std::vector<double> x, int64_t rows, int64_t cols, int64_t col0, int64_t heads,
                             int64_t hd, int64_t seq, double theta) {
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const double a = static_cast<double>(t % seq) / std::pow(theta, 2.0 * i / hd);
        double& x1 = x[t * cols + col0 + h * hd + i];
        double& x2 = x[t * cols + col0 + h * hd + i + half];
        const double r1 = x1 * std::cos(a) - x2 * std::sin(a), r2 = x2 * std::cos(a) + x1 * std::sin(a);
        x1 = r1, x2 = r2;
      }
  return x;
}

// Causal softmax attention, qkv [batch * seq, 3d]; probs [batch * heads, seq, seq] with zeros above
// the diagonal.
std::vector<double> attention_ref(const std::vector<double>& qkv, int64_t batch, int64_t seq, int64_t heads,
                                  int64_t d, std::vector<double>* probs = nullptr) {
  const int64_t hd = d / heads, ld = 3 * d;
  std::vector<double> out(static_cast<size_t>(batch * seq * d), 0.0);
  if (probs) probs->assign(static_cast<size_t>(batch * heads * seq * seq), 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < seq; ++i) {
        const double* q = &qkv[(b * seq + i) * ld + h * hd];
        std::vector<double> p(static_cast<size_t>(i + 1));
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const double* k = &qkv[(b * seq + j) * ld + d + h * hd];
          double s = 0;
          for (int64_t c = 0; c < hd; ++c) s += q[c] * k[c];
          p[j] = s / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (double& v : p) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= i; ++j) {
          p[j] /= sum;
          if (probs) (*probs)[((b * heads + h) * seq + i) * seq + j] = p[j];
          const double* v = &qkv[(b * seq + j) * ld + 2 * d + h * hd];
          for (int64_t c = 0; c < hd; ++c) out[(b * seq + i) * d + h * hd + c] += p[j] * v[c];
        }
      }
  return out;
}

std::vector<double> swiglu_ref(const std::vector<double>& h12, int64_t rows, int64_t h) {
  std::vector<double> g(static_cast<size_t>(rows * h));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < h; ++c) {
      const double a = h12[t * 2 * h + c], b = h12[t * 2 * h + h + c];
      g[t * h + c] = a / (1.0 + std::exp(-a)) * b;
    }
  return g;
}

// Per-row losses lse(z_t) - z_t[target_t].
std::vector<double> ce_rows_ref(const std::vector<double>& z, int64_t rows, int64_t vocab,
                                const std::vector<uint32_t>& targets) {
  std::vector<double> loss(static_cast<size_t>(rows));
  for (int64_t t = 0; t < rows; ++t) {
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < vocab; ++c) mx = std::max(mx, z[t * vocab + c]);
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(z[t * vocab + c] - mx);
    loss[t] = mx + std::log(sum) - z[t * vocab + targets[t]];
  }
  return loss;
}

// ---------------------------------------------------------------- matmul

TEST(CpuOps, MatmulMatchesReferenceForAllTransposesAlphaAndAccumulate) {
  const int64_t m = 5, k = 7, n = 3;
  const float alpha = 0.75f;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "trans_a " << ta << " trans_b " << tb << " accumulate " << acc);
        const Matrix a = ta ? random_matrix(k, m, Dist::kGaussian, 1) : random_matrix(m, k, Dist::kGaussian, 1);
        const Matrix b = tb ? random_matrix(n, k, Dist::kGaussian, 2) : random_matrix(k, n, Dist::kGaussian, 2);
        const Matrix c0 = random_matrix(m, n, Dist::kGaussian, 3);
        // Without accumulate the old contents must not matter at all, NaN included.
        Matrix c = c0;
        if (!acc) std::fill(c.data.begin(), c.data.end(), kNaN);
        cpu::matmul(a, ta, b, tb, c, alpha, acc);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double want = acc ? c0.at(i, j) : 0.0, mag = std::fabs(want);
            for (int64_t p = 0; p < k; ++p) {
              const double ap = ta ? a.at(p, i) : a.at(i, p), bp = tb ? b.at(j, p) : b.at(p, j);
              want += alpha * ap * bp;
              mag += std::fabs(alpha * ap * bp);
            }
            // Standard float32 dot-product bound: (k + 2) roundings, each relative to the magnitudes.
            EXPECT_NEAR(c.at(i, j), want, (k + 2) * kU * mag + 1e-30) << "at (" << i << ", " << j << ")";
          }
      }
}

TEST(CpuOps, MatmulRejectsMismatchedShapes) {
  const Matrix a(4, 3), b(3, 2);
  Matrix c(4, 2), wrong_c(4, 3);
  EXPECT_NO_THROW(cpu::matmul(a, false, b, false, c));
  EXPECT_THROW(cpu::matmul(a, false, b, true, c), Error);  // inner dimensions 3 vs 2
  EXPECT_THROW(cpu::matmul(a, false, b, false, wrong_c), Error);
}

// ---------------------------------------------------------------- embedding

TEST(CpuOps, EmbeddingForwardCopiesTheRowsOfTheIds) {
  const Matrix table = random_matrix(6, 5, Dist::kGaussian, 4);
  const std::vector<uint32_t> ids = {3, 0, 5, 3, 3, 1, 5};  // repeats and both ends of the vocabulary
  Matrix out(static_cast<int64_t>(ids.size()), 5);
  cpu::embedding_forward(table, ids, out);
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(out.at(static_cast<int64_t>(t), c), table.at(ids[t], c));
}

TEST(CpuOps, EmbeddingForwardRejectsIdsOutsideTheVocabulary) {
  const Matrix table = random_matrix(6, 5, Dist::kGaussian, 4);
  Matrix out(2, 5);
  EXPECT_THROW(cpu::embedding_forward(table, {2, 6}, out), Error);  // 6 == vocab: one past the end
}

TEST(CpuOps, EmbeddingBackwardAccumulatesEveryOccurrence) {
  const int64_t vocab = 6, d = 5;
  const std::vector<uint32_t> ids = {3, 0, 5, 3, 3, 1, 5};  // 2 and 4 never occur
  const Matrix dout = random_matrix(static_cast<int64_t>(ids.size()), d, Dist::kGaussian, 5);
  const Matrix d0 = random_matrix(vocab, d, Dist::kGaussian, 6);
  Matrix dtable = d0;  // += onto existing contents, as for a gradient shared with another use
  cpu::embedding_backward(dout, ids, dtable);
  std::vector<double> want = to64(d0);
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < d; ++c) want[ids[t] * d + c] += dout.at(static_cast<int64_t>(t), c);
  // At most 4 float32 additions per element (3 occurrences of id 3 plus the initial value).
  EXPECT_TRUE(all_near(dtable, want, 1e-6, 4 * kU));
  for (int64_t c = 0; c < d; ++c) {  // untouched rows stay bit-identical
    EXPECT_EQ(dtable.at(2, c), d0.at(2, c));
    EXPECT_EQ(dtable.at(4, c), d0.at(4, c));
  }
}

// ---------------------------------------------------------------- rmsnorm

// 70 rows: more than one of the backward's 64-row dw blocks. Row 1 is tiny, so eps dominates its
// rstd: a misplaced eps (outside the sqrt, or on the sum instead of the mean) shows there.
struct RmsCase {
  int64_t rows = 70, cols = 8;
  double eps = 1e-2;
  Matrix x = random_matrix(rows, cols, Dist::kGaussian, 7), w = random_matrix(1, cols, Dist::kGaussian, 8);
  RmsCase() {
    for (int64_t c = 0; c < cols; ++c) x.at(1, c) *= 0.05f;
  }
};

TEST(CpuOps, RmsnormForwardMatchesReference) {
  const RmsCase k;
  Matrix y(k.rows, k.cols);
  std::vector<float> rstd;
  cpu::rmsnorm_forward(k.x, k.w.data.data(), k.eps, y, rstd);
  std::vector<double> rstd_want;
  const std::vector<double> want = rmsnorm_ref(to64(k.x), to64(k.w), k.rows, k.cols, k.eps, &rstd_want);
  ASSERT_EQ(rstd.size(), static_cast<size_t>(k.rows));
  // rstd: one rounding of a float64 value; y = x * r * w: three more roundings.
  EXPECT_TRUE(all_near(rstd.data(), rstd_want, 0, 2 * kU));
  EXPECT_TRUE(all_near(y, want, 1e-12, 6 * kU));
}

TEST(CpuOps, RmsnormBackwardMatchesFiniteDifferences) {
  const RmsCase k;
  const Matrix dy = random_matrix(k.rows, k.cols, Dist::kGaussian, 9);
  Matrix y(k.rows, k.cols), dx(k.rows, k.cols), dw(1, k.cols);
  std::vector<float> rstd;
  cpu::rmsnorm_forward(k.x, k.w.data.data(), k.eps, y, rstd);
  cpu::rmsnorm_backward(dy, k.x, k.w.data.data(), rstd, dx, dw.data.data());
  const std::vector<double> x = to64(k.x), w = to64(k.w), g = to64(dy);
  // L = sum(dy * y): its gradients are exactly what backward propagates.
  const auto dx_want = numeric_grad(x, [&](const auto& xv) { return dot(g, rmsnorm_ref(xv, w, k.rows, k.cols, k.eps)); });
  const auto dw_want = numeric_grad(w, [&](const auto& wv) { return dot(g, rmsnorm_ref(x, wv, k.rows, k.cols, k.eps)); });
  // Computed in float64 from float32 inputs (rstd rounded once) and rounded once more: ~1e-7
  // relative to the terms, which reach ~10 on the tiny row (rstd ~ 10). dw: a 70-row sum.
  EXPECT_TRUE(all_near(dx, dx_want, 2e-6, 2e-6));
  EXPECT_TRUE(all_near(dw, dw_want, 2e-6, 2e-6));
}

TEST(CpuOps, RmsnormBackwardAccumulatesIntoDxAndDw) {
  const RmsCase k;
  const Matrix dy = random_matrix(k.rows, k.cols, Dist::kGaussian, 9);
  Matrix y(k.rows, k.cols), dx(k.rows, k.cols), dw(1, k.cols);
  std::vector<float> rstd;
  cpu::rmsnorm_forward(k.x, k.w.data.data(), k.eps, y, rstd);
  cpu::rmsnorm_backward(dy, k.x, k.w.data.data(), rstd, dx, dw.data.data());  // from zero: the gradient alone
  const Matrix dx0 = random_matrix(k.rows, k.cols, Dist::kGaussian, 10), dw0 = random_matrix(1, k.cols, Dist::kGaussian, 11);
  Matrix dx_acc = dx0, dw_acc = dw0;
  cpu::rmsnorm_backward(dy, k.x, k.w.data.data(), rstd, dx_acc, dw_acc.data.data());
  // The gradient is computed the same way both times (deterministic dw block order), then added
  // once in float32: the result is exactly old + gradient.
  for (int64_t i = 0; i < dx.size(); ++i) ASSERT_EQ(dx_acc.data[i], dx0.data[i] + dx.data[i]) << "dx element " << i;
  for (int64_t c = 0; c < k.cols; ++c) ASSERT_EQ(dw_acc.data[c], dw0.data[c] + dw.data[c]) << "dw element " << c;
}

// ---------------------------------------------------------------- rope

// batch 2 x seq 3; the rotated block [4, 20) sits between untouched columns on both sides.
struct RopeCase {
  int64_t batch = 2, seq = 3, rows = 6, cols = 23, col0 = 4, heads = 2, hd = 8;
  double theta = 10000.0;
  Matrix x = random_matrix(rows, cols, Dist::kGaussian, 12);
};

// Per-element bound for a rotated pair: cos/sin rounded to float, two products and a sum.
double rope_tol(const Matrix& x, int64_t t, int64_t c, const RopeCase& k) {
  const int64_t in = c - k.col0, i = in % k.hd, half = k.hd / 2;
  const int64_t mate = i < half ? c + half : c - half;
  return 4 * kU * (std::fabs(x.at(t, c)) + std::fabs(x.at(t, mate)));
}

TEST(CpuOps, RopeForwardMatchesRotateHalfReferenceWithPositionModSeq) {
  const RopeCase k;
  Matrix x = k.x;
  cpu::rope(x, k.col0, k.heads, k.hd, k.seq, k.theta, +1);
  // pos = t % seq: row 3 (batch 1, position 0) must come back unrotated, not at angle 3 * freq.
  const auto want = rope_ref(to64(k.x), k.rows, k.cols, k.col0, k.heads, k.hd, k.seq, k.theta);
  for (int64_t t = 0; t < k.rows; ++t)
    for (int64_t c = 0; c < k.cols; ++c) {
      const bool rotated = c >= k.col0 && c < k.col0 + k.heads * k.hd;
      if (!rotated || t % k.seq == 0)  // outside the block, and at position 0, bit-identical
        EXPECT_EQ(x.at(t, c), k.x.at(t, c)) << "at (" << t << ", " << c << ")";
      else
        EXPECT_NEAR(x.at(t, c), want[t * k.cols + c], rope_tol(k.x, t, c, k)) << "at (" << t << ", " << c << ")";
    }
}

TEST(CpuOps, RopeDirectionMinusOneInvertsPlusOne) {
  const RopeCase k;
  Matrix x = k.x;
  cpu::rope(x, k.col0, k.heads, k.hd, k.seq, k.theta, +1);
  cpu::rope(x, k.col0, k.heads, k.hd, k.seq, k.theta, -1);
  // Two float rotations: cos^2 + sin^2 = 1 only to a few ulps.
  for (int64_t t = 0; t < k.rows; ++t)
    for (int64_t c = k.col0; c < k.col0 + k.heads * k.hd; ++c)
      EXPECT_NEAR(x.at(t, c), k.x.at(t, c), 2 * rope_tol(k.x, t, c, k)) << "at (" << t << ", " << c << ")";
}

TEST(CpuOps, RopeBackwardMatchesFiniteDifferences) {
  const RopeCase k;
  const Matrix dy = random_matrix(k.rows, k.cols, Dist::kGaussian, 13);
  Matrix dx = dy;
  cpu::rope(dx, k.col0, k.heads, k.hd, k.seq, k.theta, -1);  // the documented backward
  const std::vector<double> g = to64(dy);
  const auto want = numeric_grad(to64(k.x), [&](const auto& xv) {
    return dot(g, rope_ref(xv, k.rows, k.cols, k.col0, k.heads, k.hd, k.seq, k.theta));
  });
  // A float rotation of O(1) values: ~3 roundings; columns outside the block pass dy through.
  EXPECT_TRUE(all_near(dx, want, 1e-6, 1e-6));
}

// ---------------------------------------------------------------- attention

// batch 2, seq 5, 2 heads of 4: d = 8, qkv [10, 24]. Scaled up so the softmax is far from uniform.
struct AttnCase {
  int64_t batch = 2, seq = 5, heads = 2, d = 8, rows = 10;
  Matrix qkv = random_matrix(rows, 3 * d, Dist::kGaussian, 14, 1.5);
};

TEST(CpuOps, AttentionForwardMatchesCausalSoftmaxReference) {
  const AttnCase k;
  Matrix out(k.rows, k.d);
  std::vector<float> probs;
  cpu::attention_forward(k.qkv, k.batch, k.seq, k.heads, out, probs);
  std::vector<double> probs_want;
  const auto want = attention_ref(to64(k.qkv), k.batch, k.seq, k.heads, k.d, &probs_want);
  ASSERT_EQ(probs.size(), probs_want.size());
  // Scores are 4-term dot products of values ~1.5 (~1e-6 absolute), probabilities in [0, 1]; the
  // masked upper triangle must be exactly zero.
  EXPECT_TRUE(all_near(probs.data(), probs_want, 1e-6, 2e-6));
  for (int64_t bh = 0; bh < k.batch * k.heads; ++bh)
    for (int64_t i = 0; i < k.seq; ++i)
      for (int64_t j = i + 1; j < k.seq; ++j) EXPECT_EQ(probs[(bh * k.seq + i) * k.seq + j], 0.0f);
  EXPECT_TRUE(all_near(out, want, 2e-6, 2e-6));
}

TEST(CpuOps, AttentionBackwardMatchesFiniteDifferences) {
  const AttnCase k;
  const Matrix dout = random_matrix(k.rows, k.d, Dist::kGaussian, 15);
  Matrix out(k.rows, k.d), dqkv(k.rows, 3 * k.d);
  std::vector<float> probs;
  cpu::attention_forward(k.qkv, k.batch, k.seq, k.heads, out, probs);
  std::fill(dqkv.data.begin(), dqkv.data.end(), kNaN);  // documented as overwritten, all of it
  cpu::attention_backward(dout, k.qkv, probs, k.batch, k.seq, k.heads, dqkv);
  const std::vector<double> g = to64(dout);
  const auto want = numeric_grad(to64(k.qkv), [&](const auto& v) {
    return dot(g, attention_ref(v, k.batch, k.seq, k.heads, k.d));
  });
  // float32 products of length <= 5 through the stored (rounded) probabilities and the softmax
  // backward's difference dP - rowsum(dP * P): a few 1e-7 absolute on O(1) gradients.
  EXPECT_TRUE(all_near(dqkv, want, 3e-6, 3e-6));
}

TEST(CpuOps, AttentionIsCausalAndBatchesAreIndependent) {
  const AttnCase k;
  Matrix out(k.rows, k.d), out2(k.rows, k.d);
  std::vector<float> probs, probs2;
  cpu::attention_forward(k.qkv, k.batch, k.seq, k.heads, out, probs);
  // Change k and v (not q) of token 2 of batch 0, every head.
  Matrix changed = k.qkv;
  for (int64_t c = k.d; c < 3 * k.d; ++c) changed.at(2, c) += 1.0f;
  cpu::attention_forward(changed, k.batch, k.seq, k.heads, out2, probs2);
  for (int64_t t = 0; t < k.rows; ++t) {
    const bool may_change = t >= 2 && t < k.seq;  // batch 0, at or after the changed token
    for (int64_t c = 0; c < k.d; ++c) {
      if (may_change) continue;
      EXPECT_EQ(out2.at(t, c), out.at(t, c)) << "row " << t << " saw a later token or another batch";
    }
  }
  for (int64_t t = 2; t < k.seq; ++t) {  // ...and the change does reach the rows that may see it
    double diff = 0;
    for (int64_t c = 0; c < k.d; ++c) diff += std::fabs(out2.at(t, c) - out.at(t, c));
    EXPECT_GT(diff, 1e-3) << "row " << t;
  }
}

// ---------------------------------------------------------------- swiglu

// 4 rows, h = 6: h12 [4, 12]. Wide (stddev 3) so sigmoid's tails and the middle both appear.
struct SwigluCase {
  int64_t rows = 4, h = 6;
  Matrix h12 = random_matrix(rows, 2 * h, Dist::kGaussian, 16, 3.0);
};

TEST(CpuOps, SwigluForwardMatchesReference) {
  const SwigluCase k;
  Matrix g(k.rows, k.h);
  cpu::swiglu_forward(k.h12, g);
  // float32 exp, division and two products: well within 16 ulps of the float64 value.
  EXPECT_TRUE(all_near(g, swiglu_ref(to64(k.h12), k.rows, k.h), 1e-30, 16 * kU));
}

TEST(CpuOps, SwigluBackwardMatchesFiniteDifferences) {
  const SwigluCase k;
  const Matrix dg = random_matrix(k.rows, k.h, Dist::kGaussian, 17);
  Matrix dh12(k.rows, 2 * k.h);
  std::fill(dh12.data.begin(), dh12.data.end(), kNaN);  // documented as overwritten
  cpu::swiglu_backward(dg, k.h12, dh12);
  const std::vector<double> g = to64(dg);
  const auto want = numeric_grad(to64(k.h12), [&](const auto& v) { return dot(g, swiglu_ref(v, k.rows, k.h)); });
  // A handful of float32 roundings on O(1..10) values.
  EXPECT_TRUE(all_near(dh12, want, 1e-6, 2e-6));
}

// ---------------------------------------------------------------- cross-entropy

// 6 rows over a vocabulary of 7; row 0 shifted by +1000, where an unshifted exp would overflow.
struct CeCase {
  int64_t rows = 6, vocab = 7;
  Matrix logits = random_matrix(rows, vocab, Dist::kGaussian, 18, 2.0);
  std::vector<uint32_t> targets = random_ids(rows, 7, 19);
  CeCase() {
    for (int64_t c = 0; c < vocab; ++c) logits.at(0, c) += 1000.0f;
  }
};

TEST(CpuOps, CrossEntropyReturnsTheSumOfRowLosses) {
  const CeCase k;
  const auto rows = ce_rows_ref(to64(k.logits), k.rows, k.vocab, k.targets);
  double want = 0;
  for (double l : rows) want += l;
  // Not the mean: with 6 rows the mean would be 6x smaller. The op's only float32 step is z - max
  // (exact in row 0, whose operands are within a factor 2; ~3e-7 elsewhere); the rest is float64.
  Matrix dlogits(k.rows, k.vocab);
  EXPECT_NEAR(cpu::cross_entropy(k.logits, k.targets, &dlogits, 1.0f), want, 1e-6 * k.rows);
  EXPECT_NEAR(cpu::cross_entropy(k.logits, k.targets, nullptr, 1.0f), want, 1e-6 * k.rows);  // no gradient asked
}

TEST(CpuOps, CrossEntropyGradientMatchesFiniteDifferencesOfTheScaledSum) {
  const CeCase k;
  const float scale = 1.0f / static_cast<float>(k.rows);  // the mean loss, as training uses it
  Matrix dlogits(k.rows, k.vocab);
  std::fill(dlogits.data.begin(), dlogits.data.end(), kNaN);  // documented as overwritten
  cpu::cross_entropy(k.logits, k.targets, &dlogits, scale);
  const auto want = numeric_grad(to64(k.logits), [&](const auto& z) {
    double s = 0;
    for (double l : ce_rows_ref(z, k.rows, k.vocab, k.targets)) s += l;
    return scale * s;
  });
  // softmax in float32 of a float64 value times scale: a few ulps of values <= scale.
  EXPECT_TRUE(all_near(dlogits, want, 1e-7, 2e-6));
}

TEST(CpuOps, CrossEntropyGradientRowsSumToZeroAndScaleMultipliesThem) {
  const CeCase k;
  Matrix g1(k.rows, k.vocab), gs(k.rows, k.vocab);
  const float s = 0.37f;
  cpu::cross_entropy(k.logits, k.targets, &g1, 1.0f);
  cpu::cross_entropy(k.logits, k.targets, &gs, s);
  for (int64_t t = 0; t < k.rows; ++t) {
    // softmax - onehot: the probabilities sum to 1, each rounded once to float.
    double sum1 = 0, sums = 0;
    for (int64_t c = 0; c < k.vocab; ++c) sum1 += g1.at(t, c), sums += gs.at(t, c);
    EXPECT_NEAR(sum1, 0.0, 2 * k.vocab * kU) << "row " << t;
    EXPECT_NEAR(sums, 0.0, 2 * k.vocab * kU * s) << "row " << t;
    EXPECT_LT(g1.at(t, k.targets[t]), 0.0f) << "row " << t;  // the target's logit is pushed up
    for (int64_t c = 0; c < k.vocab; ++c)  // one extra rounding on the scaled side
      EXPECT_NEAR(gs.at(t, c), s * static_cast<double>(g1.at(t, c)), 4 * kU * s) << "(" << t << ", " << c << ")";
  }
}

// ---------------------------------------------------------------- add_inplace

TEST(CpuOps, AddInplaceAddsElementwise) {
  const Matrix a0 = random_matrix(3, 5, Dist::kGaussian, 20), b = random_matrix(3, 5, Dist::kGaussian, 21);
  Matrix a = a0;
  cpu::add_inplace(a, b);
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(a.data[i], a0.data[i] + b.data[i]);
}

}  // namespace
}  // namespace q2::model
