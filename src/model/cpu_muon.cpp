#include "model/cpu_muon.h"

#include <cmath>
#include <utility>
#include <vector>

#include "format/bf16_matrix.h"
#include "model/cpu_ops.h"
#include "model/muon.h"

namespace q2::model::cpu {

namespace {

void round_to(Matrix& m, NsPrecision p) {
  if (p == NsPrecision::kBf16) m = bf16::round(std::move(m));
}

}  // namespace

void orthogonalize(Matrix& u, MuonOrtho ortho, NsPrecision p) {
  // On the short side: X [s, l] with s <= l, so the Gram matrix A is s x s.
  const bool tall = u.rows > u.cols;
  Matrix x = tall ? transpose(u) : std::move(u);
  const int64_t s = x.rows, l = x.cols;
  double ss = 0;
  for (const float v : x.data) ss += static_cast<double>(v) * v;
  const float k = static_cast<float>(1.0 / (ns_norm_scale(ortho) * std::sqrt(ss) + ns_norm_eps(ortho)));
  for (float& v : x.data) v *= k;
  round_to(x, p);
  Matrix a(s, s), b(s, s), y(s, l);
  for (int i = 0; i < kMuonSteps; ++i) {
    const NsStep c = ns_step(ortho, i);
    const float ca = static_cast<float>(c.a), cb = static_cast<float>(c.b), cc = static_cast<float>(c.c);
    matmul(x, false, x, true, a);  // A = X X^T
    round_to(a, p);
    for (int64_t j = 0; j < a.size(); ++j) b.data[j] = cb * a.data[j];
    round_to(b, p);
    matmul(a, false, a, false, b, cc, true);  // B = b A + c A A
    round_to(b, p);
    for (int64_t j = 0; j < x.size(); ++j) y.data[j] = ca * x.data[j];
    round_to(y, p);
    matmul(b, false, x, false, y, 1.0f, true);  // X = a X + B X
    round_to(y, p);
    std::swap(x, y);
  }
  u = tall ? transpose(x) : std::move(x);
}

void muon_step(float* w, const float* g, float* m, float* v, int64_t rows, int64_t cols, const MuonHyper& h,
               NsPrecision p) {
  const int64_t n = rows * cols;
  const float mu = static_cast<float>(h.momentum), one_mu = static_cast<float>(1.0 - h.momentum);
  Matrix x(rows, cols);
#pragma omp parallel for
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j] * h.grad_scale;
    m[j] = m[j] + one_mu * (gj - m[j]);
    x.data[j] = gj + mu * (m[j] - gj);
  }
  orthogonalize(x, h.ortho, p);

  // Variance reduction: the mean square along the long side, its running average V, and the
  // per-row (per-column) factors that even out X while keeping its Frobenius norm.
  const bool per_row = muon_per_row(rows, cols);
  const int64_t k = per_row ? rows : cols, len = per_row ? cols : rows;
  std::vector<float> r(static_cast<size_t>(k)), f(static_cast<size_t>(k));
#pragma omp parallel for
  for (int64_t i = 0; i < k; ++i) {
    double s = 0;
    for (int64_t j = 0; j < len; ++j) {
      const double e = per_row ? x.at(i, j) : x.at(j, i);
      s += e * e;
    }
    r[i] = static_cast<float>(s / static_cast<double>(len));
  }
  const float one_b2 = static_cast<float>(1.0 - h.beta2);
  double norm_sq = 0, new_sq = 0;
  for (int64_t i = 0; i < k; ++i) {
    v[i] = v[i] + one_b2 * (r[i] - v[i]);
    f[i] = 1.0f / std::sqrt(std::max(v[i], static_cast<float>(kMuonVarianceFloor)));
    norm_sq += static_cast<double>(r[i]) * len;
    new_sq += static_cast<double>(r[i]) * len * f[i] * f[i];
  }
  const float keep_norm =
      static_cast<float>(std::sqrt(norm_sq) / std::max(std::sqrt(new_sq), kMuonVarianceFloor));
  for (float& e : f) e *= keep_norm;

  // Cautious weight decay and the update.
  const double lr = h.lr * muon_lr_scale(rows, cols);
  const float step = static_cast<float>(lr), decay = static_cast<float>(lr * h.weight_decay);
#pragma omp parallel for
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t e = i * cols + j;
      const float u = x.data[e] * f[per_row ? i : j];
      w[e] = w[e] - (step * u + (u * w[e] >= 0.0f ? decay * w[e] : 0.0f));
    }
}

}  // namespace q2::model::cpu
