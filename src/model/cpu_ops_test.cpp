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

// Causal softmax attention over qkv [batch * seq, q | k | v] of a.n_heads query heads and
// a.n_kv_heads key/value heads (query head h reads key/value head h * n_kv_heads / n_heads), key j
// seen by query i when j <= i and, with a window, i - j <= window; probs [batch * heads, seq, seq]
// with zeros elsewhere.
std::vector<double> attention_ref(const std::vector<double>& qkv, const AttentionDims& a,
                                  std::vector<double>* probs = nullptr) {
  const int64_t hd = a.head_dim, seq = a.seq, q_cols = a.n_heads * hd, kv_cols = a.n_kv_heads * hd;
  const int64_t ld = q_cols + 2 * kv_cols;
  std::vector<double> out(static_cast<size_t>(a.batch * seq * q_cols), 0.0);
  if (probs) probs->assign(static_cast<size_t>(a.batch * a.n_heads * seq * seq), 0.0);
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t h = 0; h < a.n_heads; ++h) {
      const int64_t kv = h * a.n_kv_heads / a.n_heads;
      for (int64_t i = 0; i < seq; ++i) {
        const double* q = &qkv[(b * seq + i) * ld + h * hd];
        std::vector<double> p(static_cast<size_t>(seq), 0.0);
        std::vector<bool> seen(static_cast<size_t>(seq), false);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (a.window >= 0 && i - j > a.window) continue;
          seen[j] = true;
          const double* k = &qkv[(b * seq + j) * ld + q_cols + kv * hd];
          double s = 0;
          for (int64_t c = 0; c < hd; ++c) s += q[c] * k[c];
          p[j] = s / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < seq; ++j)
          if (seen[j]) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t j = 0; j < seq; ++j) {
          if (!seen[j]) continue;
          p[j] /= sum;
          if (probs) (*probs)[((b * a.n_heads + h) * seq + i) * seq + j] = p[j];
          const double* v = &qkv[(b * seq + j) * ld + q_cols + kv_cols + kv * hd];
          for (int64_t c = 0; c < hd; ++c) out[(b * seq + i) * q_cols + h * hd + c] += p[j] * v[c];
        }
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

TEST(CpuOps, RmsnormWithoutGainIsTheGainOfOnes) {
  const RmsCase k;
  Matrix ones(1, k.cols), y(k.rows, k.cols), y1(k.rows, k.cols);
  std::fill(ones.data.begin(), ones.data.end(), 1.0f);
  std::vector<float> rstd, rstd1;
  cpu::rmsnorm_forward(k.x, nullptr, k.eps, y, rstd);
  cpu::rmsnorm_forward(k.x, ones.data.data(), k.eps, y1, rstd1);
  EXPECT_EQ(y.data, y1.data);  // x * r * 1 == x * r exactly
  EXPECT_EQ(rstd, rstd1);
  // Backward without a gain against finite differences of the float64 reference with w = 1.
  const Matrix dy = random_matrix(k.rows, k.cols, Dist::kGaussian, 9);
  Matrix dx(k.rows, k.cols), dw(1, k.cols);
  cpu::rmsnorm_backward(dy, k.x, nullptr, rstd, dx, nullptr);
  const std::vector<double> w1(static_cast<size_t>(k.cols), 1.0), g = to64(dy);
  const auto want = numeric_grad(to64(k.x), [&](const auto& xv) { return dot(g, rmsnorm_ref(xv, w1, k.rows, k.cols, k.eps)); });
  EXPECT_TRUE(all_near(dx, want, 2e-6, 2e-6));
  // A gain without its gradient (or the reverse) is a mistake.
  EXPECT_THROW(cpu::rmsnorm_backward(dy, k.x, nullptr, rstd, dx, dw.data.data()), Error);
  EXPECT_THROW(cpu::rmsnorm_backward(dy, k.x, ones.data.data(), rstd, dx, nullptr), Error);
}

// ---------------------------------------------------------------- QK norm (RMSNorm of each head)

// 5 rows of [q | k | v] with 3 + 2 heads of 4 normed (columns [0, 20)) and 8 columns of v after
// them that must stay untouched; one head tiny, where eps matters.
struct HeadNormCase {
  int64_t rows = 5, heads = 5, hd = 4, cols = 28;
  double eps = 1e-3;
  Matrix x = random_matrix(rows, cols, Dist::kGaussian, 60, 2.0);
  HeadNormCase() {
    for (int64_t c = 4; c < 8; ++c) x.at(2, c) *= 0.01f;
  }
};

std::vector<double> head_norm_ref(std::vector<double> x, const HeadNormCase& k) {
  for (int64_t t = 0; t < k.rows; ++t)
    for (int64_t h = 0; h < k.heads; ++h) {
      double* p = &x[t * k.cols + h * k.hd];
      double ss = 0;
      for (int64_t c = 0; c < k.hd; ++c) ss += p[c] * p[c];
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(k.hd) + k.eps);
      for (int64_t c = 0; c < k.hd; ++c) p[c] *= r;
    }
  return x;
}

TEST(CpuOps, HeadRmsnormNormsEachHeadAndLeavesTheRest) {
  const HeadNormCase k;
  Matrix y = k.x;
  std::vector<float> rstd;
  cpu::head_rmsnorm_forward(y, 0, k.heads, k.hd, k.eps, rstd);
  ASSERT_EQ(rstd.size(), static_cast<size_t>(k.rows * k.heads));
  const auto want = head_norm_ref(to64(k.x), k);
  EXPECT_TRUE(all_near(y, want, 1e-12, 4 * kU));
  for (int64_t t = 0; t < k.rows; ++t)
    for (int64_t c = k.heads * k.hd; c < k.cols; ++c) EXPECT_EQ(y.at(t, c), k.x.at(t, c)) << "v column " << c;
}

TEST(CpuOps, HeadRmsnormBackwardMatchesFiniteDifferences) {
  const HeadNormCase k;
  Matrix y = k.x;
  std::vector<float> rstd;
  cpu::head_rmsnorm_forward(y, 0, k.heads, k.hd, k.eps, rstd);
  const Matrix dy = random_matrix(k.rows, k.cols, Dist::kGaussian, 61);
  Matrix dx = dy;
  cpu::head_rmsnorm_backward(dx, y, 0, k.heads, k.hd, rstd);
  const std::vector<double> g = to64(dy);
  const auto want = numeric_grad(to64(k.x), [&](const auto& xv) { return dot(g, head_norm_ref(xv, k)); });
  // The tiny head's rstd is ~30: terms up to ~30, a few roundings each; v's columns pass dy.
  EXPECT_TRUE(all_near(dx, want, 1e-5, 2e-6));
  EXPECT_THROW(cpu::head_rmsnorm_forward(y, 12, k.heads, k.hd, k.eps, rstd), Error);  // past the last column
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

// Multi-head (batch 2, seq 5, 2 heads of 4: qkv [10, 24]); grouped-query (4 query heads on 2
// key/value heads); both grouped (4 on 1) and windowed (each query sees itself and 2 before).
// Scaled up so the softmax is far from uniform.
struct AttnCase {
  AttentionDims a;
  int64_t rows = a.batch * a.seq, q_cols = a.q_cols();
  Matrix qkv = random_matrix(rows, a.qkv_cols(), Dist::kGaussian, 14 + a.n_heads + a.n_kv_heads, 1.5);
  std::string name() const {
    return std::to_string(a.n_heads) + " heads on " + std::to_string(a.n_kv_heads) + ", window " +
           std::to_string(a.window);
  }
};
const AttentionDims kMha{2, 5, 2, 2, 4}, kGqa{2, 6, 4, 2, 4}, kGqaWindow{2, 6, 4, 1, 4, 2};

TEST(CpuOps, AttentionForwardMatchesCausalSoftmaxReference) {
  for (const AttentionDims& dims : {kMha, kGqa, kGqaWindow}) {
    const AttnCase k{dims};
    SCOPED_TRACE(k.name());
    Matrix out(k.rows, k.q_cols);
    std::vector<float> probs;
    cpu::attention_forward(k.qkv, k.a, out, probs);
    std::vector<double> probs_want;
    const auto want = attention_ref(to64(k.qkv), k.a, &probs_want);
    ASSERT_EQ(probs.size(), probs_want.size());
    // Scores are 4-term dot products of values ~1.5 (~1e-6 absolute), probabilities in [0, 1]; the
    // masked part (the upper triangle, and what lies beyond the window) must be exactly zero.
    EXPECT_TRUE(all_near(probs.data(), probs_want, 1e-6, 2e-6));
    for (size_t i = 0; i < probs.size(); ++i) {
      if (probs_want[i] == 0.0) {
        ASSERT_EQ(probs[i], 0.0f) << "masked probability " << i;
      }
    }
    EXPECT_TRUE(all_near(out, want, 2e-6, 2e-6));
  }
}

TEST(CpuOps, AttentionBackwardMatchesFiniteDifferences) {
  for (const AttentionDims& dims : {kMha, kGqa, kGqaWindow}) {
    const AttnCase k{dims};
    SCOPED_TRACE(k.name());
    const Matrix dout = random_matrix(k.rows, k.q_cols, Dist::kGaussian, 15);
    Matrix out(k.rows, k.q_cols), dqkv(k.rows, k.a.qkv_cols());
    std::vector<float> probs;
    cpu::attention_forward(k.qkv, k.a, out, probs);
    std::fill(dqkv.data.begin(), dqkv.data.end(), kNaN);  // documented as overwritten, all of it
    cpu::attention_backward(dout, k.qkv, probs, k.a, dqkv);
    const std::vector<double> g = to64(dout);
    const auto want = numeric_grad(to64(k.qkv), [&](const auto& v) { return dot(g, attention_ref(v, k.a)); });
    // float32 products of length <= 6 through the stored (rounded) probabilities and the softmax
    // backward's difference dP - rowsum(dP * P), summed over up to 4 query heads for a shared key
    // or value: a few 1e-7 absolute on O(1) gradients.
    EXPECT_TRUE(all_near(dqkv, want, 3e-6, 3e-6));
  }
}

TEST(CpuOps, AttentionRejectsShapesThatDoNotAgree) {
  const AttnCase k{kGqa};
  Matrix out(k.rows, k.q_cols), wrong(k.rows, k.q_cols + 4);
  std::vector<float> probs;
  AttentionDims mha = kGqa;
  mha.n_kv_heads = 4;  // qkv holds 2 key/value heads, not 4
  EXPECT_THROW(cpu::attention_forward(k.qkv, mha, out, probs), Error);
  EXPECT_THROW(cpu::attention_forward(k.qkv, k.a, wrong, probs), Error);
  AttentionDims uneven = kGqa;
  uneven.n_kv_heads = 3;
  EXPECT_THROW(cpu::attention_forward(k.qkv, uneven, out, probs), Error);
}

TEST(CpuOps, AttentionIsCausalAndBatchesAreIndependent) {
  const AttnCase k{kMha};
  const int64_t d = k.q_cols;
  Matrix out(k.rows, d), out2(k.rows, d);
  std::vector<float> probs, probs2;
  cpu::attention_forward(k.qkv, k.a, out, probs);
  // Change k and v (not q) of token 2 of batch 0, every head.
  Matrix changed = k.qkv;
  for (int64_t c = d; c < 3 * d; ++c) changed.at(2, c) += 1.0f;
  cpu::attention_forward(changed, k.a, out2, probs2);
  for (int64_t t = 0; t < k.rows; ++t) {
    const bool may_change = t >= 2 && t < k.a.seq;  // batch 0, at or after the changed token
    for (int64_t c = 0; c < d; ++c) {
      if (may_change) continue;
      EXPECT_EQ(out2.at(t, c), out.at(t, c)) << "row " << t << " saw a later token or another batch";
    }
  }
  for (int64_t t = 2; t < k.a.seq; ++t) {  // ...and the change does reach the rows that may see it
    double diff = 0;
    for (int64_t c = 0; c < d; ++c) diff += std::fabs(out2.at(t, c) - out.at(t, c));
    EXPECT_GT(diff, 1e-3) << "row " << t;
  }
}

// A window of 2: token 1's key and value reach queries 1, 2 and 3 and no later one; only the
// query heads of the changed key/value head move.
TEST(CpuOps, AttentionWindowLimitsHowFarBackAQuerySees) {
  const AttnCase k{AttentionDims{1, 6, 4, 2, 4, 2}};
  Matrix out(k.rows, k.q_cols), out2(k.rows, k.q_cols);
  std::vector<float> probs, probs2;
  cpu::attention_forward(k.qkv, k.a, out, probs);
  Matrix changed = k.qkv;
  for (int64_t c = k.q_cols; c < k.q_cols + k.a.head_dim; ++c) changed.at(1, c) += 1.0f;  // key head 0 of token 1
  cpu::attention_forward(changed, k.a, out2, probs2);
  for (int64_t t = 0; t < k.rows; ++t)
    for (int64_t h = 0; h < k.a.n_heads; ++h) {
      double diff = 0;
      for (int64_t c = h * k.a.head_dim; c < (h + 1) * k.a.head_dim; ++c) diff += std::fabs(out2.at(t, c) - out.at(t, c));
      const bool sees = t >= 1 && t <= 3 && h < k.a.group();  // query heads 0 and 1 read key head 0
      if (sees)
        EXPECT_GT(diff, 1e-4) << "token " << t << " head " << h;
      else
        EXPECT_EQ(diff, 0.0) << "token " << t << " head " << h;
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

// ---------------------------------------------------------------- relu^2

TEST(CpuOps, Relu2ForwardAndBackwardMatchReferenceAndFiniteDifferences) {
  const Matrix h = random_matrix(4, 9, Dist::kGaussian, 62, 2.0);
  Matrix g(4, 9), dh(4, 9);
  cpu::relu2_forward(h, g);
  std::vector<double> want(static_cast<size_t>(h.size()));
  auto ref = [](const std::vector<double>& v) {
    std::vector<double> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = v[i] > 0 ? v[i] * v[i] : 0.0;
    return o;
  };
  EXPECT_TRUE(all_near(g, ref(to64(h)), 1e-30, kU));  // one rounding of the square
  int negatives = 0;
  for (float v : h.data) negatives += v < 0;
  EXPECT_GT(negatives, 5);  // both sides of the kink are exercised
  const Matrix dg = random_matrix(4, 9, Dist::kGaussian, 63);
  std::fill(dh.data.begin(), dh.data.end(), kNaN);  // documented as overwritten
  cpu::relu2_backward(dg, h, dh);
  const std::vector<double> gd = to64(dg);
  const auto grad = numeric_grad(to64(h), [&](const auto& v) { return dot(gd, ref(v)); });
  EXPECT_TRUE(all_near(dh, grad, 1e-6, 2e-6));
}

// ---------------------------------------------------------------- resid / x0 lambdas

TEST(CpuOps, ResidualMixMatchesFiniteDifferencesInEveryInput) {
  const Matrix x = random_matrix(70, 6, Dist::kGaussian, 64), x0 = random_matrix(70, 6, Dist::kGaussian, 65);
  const float a = 0.8f, b = -0.3f;
  Matrix y(70, 6);
  cpu::residual_mix_forward(x, x0, a, b, y);
  auto ref = [](const std::vector<double>& xv, const std::vector<double>& x0v, double av, double bv) {
    std::vector<double> o(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) o[i] = av * xv[i] + bv * x0v[i];
    return o;
  };
  EXPECT_TRUE(all_near(y, ref(to64(x), to64(x0), a, b), 1e-6, 2 * kU));
  const Matrix dy = random_matrix(70, 6, Dist::kGaussian, 66), dx0_start = random_matrix(70, 6, Dist::kGaussian, 67);
  Matrix dxy = dy, dx0 = dx0_start;
  float da = 0.5f, db = -0.25f;  // accumulated onto
  cpu::residual_mix_backward(dxy, x, x0, a, b, dx0, da, db);
  const std::vector<double> g = to64(dy), xs = to64(x), x0s = to64(x0);
  const auto want_dx = numeric_grad(xs, [&](const auto& v) { return dot(g, ref(v, x0s, a, b)); });
  auto want_dx0 = numeric_grad(x0s, [&](const auto& v) { return dot(g, ref(xs, v, a, b)); });
  for (size_t i = 0; i < want_dx0.size(); ++i) want_dx0[i] += dx0_start.data[i];
  const auto want_ab = numeric_grad({a, b}, [&](const auto& v) { return dot(g, ref(xs, x0s, v[0], v[1])); });
  EXPECT_TRUE(all_near(dxy, want_dx, 1e-6, 2e-6));
  EXPECT_TRUE(all_near(dx0, want_dx0, 1e-6, 2e-6));
  // 420-term sums in float64, rounded once to float.
  EXPECT_NEAR(da, 0.5 + want_ab[0], 1e-5 * (1 + std::fabs(want_ab[0])));
  EXPECT_NEAR(db, -0.25 + want_ab[1], 1e-5 * (1 + std::fabs(want_ab[1])));
}

// ---------------------------------------------------------------- logit softcap

TEST(CpuOps, SoftcapSquashesIntoTheCapAndItsBackwardMatchesFiniteDifferences) {
  const float cap = 15.0f;
  const Matrix z = random_matrix(3, 8, Dist::kGaussian, 68, 20.0);  // many beyond the cap
  Matrix y = z;
  cpu::softcap_forward(y, cap);
  auto ref = [&](const std::vector<double>& v) {
    std::vector<double> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = cap * std::tanh(v[i] / cap);
    return o;
  };
  EXPECT_TRUE(all_near(y, ref(to64(z)), 1e-6, 4 * kU));
  for (float v : y.data) EXPECT_LT(std::fabs(v), cap);
  const Matrix dz0 = random_matrix(3, 8, Dist::kGaussian, 69);
  Matrix dz = dz0;
  cpu::softcap_backward(dz, y, cap);
  const std::vector<double> g = to64(dz0);
  const auto want = numeric_grad(to64(z), [&](const auto& v) { return dot(g, ref(v)); });
  // 1 - (y / cap)^2 from the rounded y: its relative error grows where y nears the cap.
  EXPECT_TRUE(all_near(dz, want, 2e-6, 1e-4));
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

// ---------------------------------------------------------------- add

TEST(CpuOps, AddAddsElementwiseIntoANewTensorOrInPlace) {
  const Matrix a0 = random_matrix(3, 5, Dist::kGaussian, 20), b = random_matrix(3, 5, Dist::kGaussian, 21);
  Matrix out(3, 5), a = a0;
  cpu::add(a0, b, out);
  cpu::add(a, b, a);
  for (int64_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(out.data[i], a0.data[i] + b.data[i]);
    EXPECT_EQ(a.data[i], out.data[i]);
  }
  EXPECT_THROW(cpu::add(a0, random_matrix(3, 4, Dist::kGaussian, 22), out), Error);
}

}  // namespace
}  // namespace q2::model
