#include "model/cpu_ops.h"

#include <cblas.h>

#include <cmath>

#include "common/error.h"

namespace q2::model::cpu {

void matmul(const Matrix& a, bool ta, const Matrix& b, bool tb, Matrix& c, float alpha, bool accumulate) {
  const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  if ((tb ? b.cols : b.rows) != k || c.rows != m || c.cols != n) throw Error("matmul: shapes do not agree");
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a.data.data(), static_cast<int>(a.cols), b.data.data(),
              static_cast<int>(b.cols), accumulate ? 1.0f : 0.0f, c.data.data(), static_cast<int>(c.cols));
}

void embedding_forward(const Matrix& table, const std::vector<uint32_t>& ids, Matrix& out) {
  for (uint32_t id : ids)  // checked before the parallel loop: exceptions cannot leave it
    if (id >= table.rows)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(table.rows));
#pragma omp parallel for
  for (int64_t t = 0; t < static_cast<int64_t>(ids.size()); ++t)
    std::copy(table.row(ids[t]), table.row(ids[t]) + table.cols, out.row(t));
}

void embedding_backward(const Matrix& dout, const std::vector<uint32_t>& ids, Matrix& dtable) {
  for (int64_t t = 0; t < static_cast<int64_t>(ids.size()); ++t) {  // serial: ids repeat
    float* d = dtable.row(ids[t]);
    const float* g = dout.row(t);
    for (int64_t c = 0; c < dout.cols; ++c) d[c] += g[c];
  }
}

void rmsnorm_forward(const Matrix& x, const float* w, double eps, Matrix& y, std::vector<float>& rstd) {
  rstd.resize(static_cast<size_t>(x.rows));
#pragma omp parallel for
  for (int64_t t = 0; t < x.rows; ++t) {
    const float* xr = x.row(t);
    double ss = 0;
    for (int64_t c = 0; c < x.cols; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / x.cols + eps));
    rstd[t] = r;
    float* yr = y.row(t);
    for (int64_t c = 0; c < x.cols; ++c) yr[c] = xr[c] * r * w[c];
  }
}

void rmsnorm_backward(const Matrix& dy, const Matrix& x, const float* w, const std::vector<float>& rstd, Matrix& dx,
                      float* dw) {
  const int64_t d = x.cols;
  // dw partials per fixed row block, summed in block order: deterministic for any thread count.
  constexpr int64_t kRowsPerBlock = 64;
  const int64_t blocks = (x.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<double> partial(static_cast<size_t>(blocks * d), 0.0);
#pragma omp parallel for
  for (int64_t blk = 0; blk < blocks; ++blk) {
    double* local = partial.data() + blk * d;
    for (int64_t t = blk * kRowsPerBlock; t < std::min(x.rows, (blk + 1) * kRowsPerBlock); ++t) {
      const float *xr = x.row(t), *g = dy.row(t);
      const double r = rstd[t];
      // dx = r * (g*w) - r^3 * x * mean(g*w*x)
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(g[c]) * w[c] * xr[c];
      const double coef = r * r * r * dot / d;
      float* o = dx.row(t);
      for (int64_t c = 0; c < d; ++c) {
        o[c] += static_cast<float>(r * g[c] * w[c] - coef * xr[c]);
        local[c] += static_cast<double>(g[c]) * xr[c] * r;
      }
    }
  }
  for (int64_t c = 0; c < d; ++c) {
    double sum = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) sum += partial[blk * d + c];
    dw[c] += static_cast<float>(sum);
  }
}

void rope(Matrix& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta, int direction) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / head_dim);
#pragma omp parallel for
  for (int64_t t = 0; t < x.rows; ++t) {
    const double pos = static_cast<double>(t % seq);
    float* r = x.row(t) + col0;
    for (int64_t i = 0; i < half; ++i) {
      const double a = pos * inv_freq[i];
      const float c = static_cast<float>(std::cos(a)), s = static_cast<float>(direction * std::sin(a));
      for (int64_t h = 0; h < n_heads; ++h) {
        float* p = r + h * head_dim;
        const float x1 = p[i], x2 = p[i + half];
        p[i] = x1 * c - x2 * s;
        p[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

namespace {

// One (batch, head) slice of qkv: row stride 3d, q at column h*hd, k at d + h*hd, v at 2d + h*hd.
struct HeadView {
  const float *q, *k, *v;
  int ld;
};

HeadView head(const Matrix& qkv, int64_t b, int64_t h, int64_t seq, int64_t hd) {
  const int64_t d = qkv.cols / 3;
  const float* base = qkv.row(b * seq);
  return {base + h * hd, base + d + h * hd, base + 2 * d + h * hd, static_cast<int>(qkv.cols)};
}

// The (batch, head) pairs run in parallel, each product single-threaded inside.
template <class F>
void for_each_head(int64_t batch, int64_t n_heads, F f) {
  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < n_heads; ++h) f(b, h);
  openblas_set_num_threads(threads);
}

}  // namespace

void attention_forward(const Matrix& qkv, int64_t batch, int64_t seq, int64_t n_heads, Matrix& out,
                       std::vector<float>& probs) {
  const int64_t d = qkv.cols / 3, hd = d / n_heads;
  const int S = static_cast<int>(seq), H = static_cast<int>(hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  probs.assign(static_cast<size_t>(batch * n_heads * seq * seq), 0.0f);
  for_each_head(batch, n_heads, [&](int64_t b, int64_t h) {
    const HeadView v = head(qkv, b, h, seq, hd);
    float* P = probs.data() + (b * n_heads + h) * seq * seq;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, H, scale, v.q, v.ld, v.k, v.ld, 0.0f, P, S);
    for (int64_t i = 0; i < seq; ++i) {  // causal softmax; the masked part stays zero
      float* p = P + i * seq;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, p[j]);
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j <= i; ++j) p[j] *= inv;
      std::fill(p + i + 1, p + seq, 0.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, H, S, 1.0f, P, S, v.v, v.ld, 0.0f,
                out.row(b * seq) + h * hd, static_cast<int>(d));
  });
}

void attention_backward(const Matrix& dout, const Matrix& qkv, const std::vector<float>& probs, int64_t batch,
                        int64_t seq, int64_t n_heads, Matrix& dqkv) {
  const int64_t d = qkv.cols / 3, hd = d / n_heads;
  const int S = static_cast<int>(seq), H = static_cast<int>(hd), ld = static_cast<int>(3 * d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for_each_head(batch, n_heads, [&](int64_t b, int64_t h) {
    const HeadView v = head(qkv, b, h, seq, hd);
    const float* P = probs.data() + (b * n_heads + h) * seq * seq;
    const float* dO = dout.row(b * seq) + h * hd;
    float* dq = dqkv.row(b * seq) + h * hd;
    float *dk = dq + d, *dv = dq + 2 * d;
    std::vector<float> dS(static_cast<size_t>(seq * seq));
    // dP = dO V^T, dV = P^T dO
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, H, 1.0f, dO, static_cast<int>(d), v.v, v.ld, 0.0f,
                dS.data(), S);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, H, S, 1.0f, P, S, dO, static_cast<int>(d), 0.0f, dv, ld);
    // softmax backward: dS = P * (dP - rowsum(dP * P)) * scale
    for (int64_t i = 0; i < seq; ++i) {
      const float* p = P + i * seq;
      float* g = dS.data() + i * seq;
      double dot = 0;
      for (int64_t j = 0; j <= i; ++j) dot += static_cast<double>(g[j]) * p[j];
      for (int64_t j = 0; j <= i; ++j) g[j] = p[j] * (g[j] - static_cast<float>(dot)) * scale;
      std::fill(g + i + 1, g + seq, 0.0f);
    }
    // dQ = dS K, dK = dS^T Q
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, H, S, 1.0f, dS.data(), S, v.k, v.ld, 0.0f, dq, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, H, S, 1.0f, dS.data(), S, v.q, v.ld, 0.0f, dk, ld);
  });
}

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void swiglu_forward(const Matrix& h12, Matrix& g) {
  const int64_t h = h12.cols / 2;
#pragma omp parallel for
  for (int64_t t = 0; t < h12.rows; ++t) {
    const float* a = h12.row(t);
    float* o = g.row(t);
    for (int64_t c = 0; c < h; ++c) o[c] = a[c] * sigmoid(a[c]) * a[c + h];
  }
}

void swiglu_backward(const Matrix& dg, const Matrix& h12, Matrix& dh12) {
  const int64_t h = h12.cols / 2;
#pragma omp parallel for
  for (int64_t t = 0; t < h12.rows; ++t) {
    const float *a = h12.row(t), *g = dg.row(t);
    float* o = dh12.row(t);
    for (int64_t c = 0; c < h; ++c) {
      const float s = sigmoid(a[c]), silu = a[c] * s;
      o[c] = g[c] * a[c + h] * (s + silu * (1.0f - s));
      o[c + h] = g[c] * silu;
    }
  }
}

double cross_entropy(const Matrix& logits, const std::vector<uint32_t>& targets, Matrix* dlogits, float scale) {
  std::vector<double> row_loss(static_cast<size_t>(logits.rows));  // summed in order: deterministic
#pragma omp parallel for
  for (int64_t t = 0; t < logits.rows; ++t) {
    const float* z = logits.row(t);
    float mx = -INFINITY;
    for (int64_t c = 0; c < logits.cols; ++c) mx = std::max(mx, z[c]);
    double sum = 0;
    for (int64_t c = 0; c < logits.cols; ++c) sum += std::exp(static_cast<double>(z[c] - mx));
    const double lse = mx + std::log(sum);
    row_loss[t] = lse - z[targets[t]];
    if (dlogits) {
      float* g = dlogits->row(t);
      for (int64_t c = 0; c < logits.cols; ++c) g[c] = static_cast<float>(std::exp(z[c] - lse)) * scale;
      g[targets[t]] -= scale;
    }
  }
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

void add_inplace(Matrix& a, const Matrix& b) {
#pragma omp parallel for
  for (int64_t i = 0; i < a.size(); ++i) a.data[i] += b.data[i];
}

}  // namespace q2::model::cpu
