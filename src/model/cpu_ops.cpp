#include "model/cpu_ops.h"

#include <cblas.h>

#include <cmath>

#include "common/blas.h"
#include "common/error.h"

namespace q2::model::cpu {

void matmul(const Matrix& a, bool ta, const Matrix& b, bool tb, Matrix& c, float alpha, bool accumulate) {
  const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  if ((tb ? b.cols : b.rows) != k || c.rows != m || c.cols != n) throw Error("matmul: shapes do not agree");
  const std::lock_guard<std::mutex> lock(blas_lock());
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
    if (w)
      for (int64_t c = 0; c < x.cols; ++c) yr[c] = xr[c] * r * w[c];
    else
      for (int64_t c = 0; c < x.cols; ++c) yr[c] = xr[c] * r;
  }
}

void rmsnorm_backward(const Matrix& dy, const Matrix& x, const float* w, const std::vector<float>& rstd, Matrix& dx,
                      float* dw) {
  if (!w != !dw) throw Error("rmsnorm_backward: a gain and its gradient go together");
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
      for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(g[c]) * (w ? w[c] : 1.0f) * xr[c];
      const double coef = r * r * r * dot / d;
      float* o = dx.row(t);
      for (int64_t c = 0; c < d; ++c) {
        o[c] += static_cast<float>(r * g[c] * (w ? w[c] : 1.0f) - coef * xr[c]);
        if (dw) local[c] += static_cast<double>(g[c]) * xr[c] * r;
      }
    }
  }
  for (int64_t c = 0; dw && c < d; ++c) {
    double sum = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) sum += partial[blk * d + c];
    dw[c] += static_cast<float>(sum);
  }
}

void head_rmsnorm_forward(Matrix& x, int64_t col0, int64_t n_heads, int64_t head_dim, double eps,
                          std::vector<float>& rstd) {
  if (col0 < 0 || col0 + n_heads * head_dim > x.cols) throw Error("head_rmsnorm: the heads do not fit the columns");
  rstd.resize(static_cast<size_t>(x.rows * n_heads));
#pragma omp parallel for
  for (int64_t t = 0; t < x.rows; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      float* p = x.row(t) + col0 + h * head_dim;
      double ss = 0;
      for (int64_t c = 0; c < head_dim; ++c) ss += static_cast<double>(p[c]) * p[c];
      const float r = static_cast<float>(1.0 / std::sqrt(ss / head_dim + eps));
      rstd[t * n_heads + h] = r;
      for (int64_t c = 0; c < head_dim; ++c) p[c] *= r;
    }
}

void head_rmsnorm_backward(Matrix& dy, const Matrix& y, int64_t col0, int64_t n_heads, int64_t head_dim,
                           const std::vector<float>& rstd) {
  if (col0 < 0 || col0 + n_heads * head_dim > dy.cols || static_cast<int64_t>(rstd.size()) != dy.rows * n_heads)
    throw Error("head_rmsnorm_backward: the heads do not fit the columns or the kept rstd");
#pragma omp parallel for
  for (int64_t t = 0; t < dy.rows; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      float* g = dy.row(t) + col0 + h * head_dim;
      const float* o = y.row(t) + col0 + h * head_dim;
      double dot = 0;
      for (int64_t c = 0; c < head_dim; ++c) dot += static_cast<double>(g[c]) * o[c];
      const double r = rstd[t * n_heads + h], mean = dot / head_dim;
      for (int64_t c = 0; c < head_dim; ++c) g[c] = static_cast<float>(r * (g[c] - o[c] * mean));
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

// One (batch, query head) slice of qkv: its q, and the k and v of its key/value head.
struct HeadView {
  const float *q, *k, *v;
  int ld;
};

HeadView head(const Matrix& qkv, const AttentionDims& a, int64_t b, int64_t h) {
  const float* base = qkv.row(b * a.seq);
  const int64_t kv = (h / a.group()) * a.head_dim;
  return {base + h * a.head_dim, base + a.q_cols() + kv, base + a.q_cols() + a.kv_cols() + kv,
          static_cast<int>(qkv.cols)};
}

void check(const AttentionDims& a, const Matrix& qkv, const Matrix& out, const char* what) {
  if (a.batch < 1 || a.seq < 1 || a.n_heads < 1 || a.n_kv_heads < 1 || a.head_dim < 1 || a.n_heads % a.n_kv_heads != 0 ||
      qkv.rows != a.batch * a.seq || qkv.cols != a.qkv_cols() || out.rows != qkv.rows || out.cols != a.q_cols())
    throw Error(std::string(what) + ": shapes do not agree (qkv [" + std::to_string(qkv.rows) + ", " +
                std::to_string(qkv.cols) + "], out [" + std::to_string(out.rows) + ", " + std::to_string(out.cols) +
                "], batch " + std::to_string(a.batch) + " x seq " + std::to_string(a.seq) + ", heads " +
                std::to_string(a.n_heads) + " / kv heads " + std::to_string(a.n_kv_heads) + " of " +
                std::to_string(a.head_dim) + ")");
}

// f(b, h) for every batch b and h < heads in parallel, each product single-threaded inside.
template <class F>
void for_each_head(int64_t batch, int64_t heads, F f) {
  const std::lock_guard<std::mutex> lock(blas_lock());  // the thread count is global
  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) f(b, h);
  openblas_set_num_threads(threads);
}

}  // namespace

void attention_forward(const Matrix& qkv, const AttentionDims& a, Matrix& out, std::vector<float>& probs) {
  check(a, qkv, out, "attention_forward");
  const int64_t seq = a.seq;
  const int S = static_cast<int>(seq), H = static_cast<int>(a.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  probs.assign(static_cast<size_t>(a.batch * a.n_heads * seq * seq), 0.0f);
  for_each_head(a.batch, a.n_heads, [&](int64_t b, int64_t h) {
    const HeadView v = head(qkv, a, b, h);
    float* P = probs.data() + (b * a.n_heads + h) * seq * seq;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, H, scale, v.q, v.ld, v.k, v.ld, 0.0f, P, S);
    for (int64_t i = 0; i < seq; ++i) {  // causal, windowed softmax; the masked part is zero
      float* p = P + i * seq;
      const int64_t j0 = a.first_key(i);
      float mx = -INFINITY;
      for (int64_t j = j0; j <= i; ++j) mx = std::max(mx, p[j]);
      double sum = 0;
      for (int64_t j = j0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = j0; j <= i; ++j) p[j] *= inv;
      std::fill(p, p + j0, 0.0f);
      std::fill(p + i + 1, p + seq, 0.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, H, S, 1.0f, P, S, v.v, v.ld, 0.0f,
                out.row(b * seq) + h * a.head_dim, static_cast<int>(out.cols));
  });
}

void attention_backward(const Matrix& dout, const Matrix& qkv, const std::vector<float>& probs, const AttentionDims& a,
                        Matrix& dqkv) {
  check(a, qkv, dout, "attention_backward");
  if (dqkv.rows != qkv.rows || dqkv.cols != qkv.cols) throw Error("attention_backward: dqkv differs from qkv in shape");
  const int64_t seq = a.seq;
  const int S = static_cast<int>(seq), H = static_cast<int>(a.head_dim), ld = static_cast<int>(dqkv.cols);
  const int ldo = static_cast<int>(dout.cols);
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  // One task per key/value head: its query heads run in order and add into its dK and dV.
  for_each_head(a.batch, a.n_kv_heads, [&](int64_t b, int64_t g) {
    std::vector<float> dS(static_cast<size_t>(seq * seq));
    for (int64_t h = g * a.group(); h < (g + 1) * a.group(); ++h) {
      const float beta = h == g * a.group() ? 0.0f : 1.0f;  // the first overwrites dK, dV
      const HeadView v = head(qkv, a, b, h);
      const float* P = probs.data() + (b * a.n_heads + h) * seq * seq;
      const float* dO = dout.row(b * seq) + h * a.head_dim;
      float* dq = dqkv.row(b * seq) + h * a.head_dim;
      float* dk = dqkv.row(b * seq) + a.q_cols() + g * a.head_dim;
      float* dv = dk + a.kv_cols();
      // dP = dO V^T, dV (+)= P^T dO
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, H, 1.0f, dO, ldo, v.v, v.ld, 0.0f, dS.data(), S);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, H, S, 1.0f, P, S, dO, ldo, beta, dv, ld);
      // softmax backward: dS = P * (dP - rowsum(dP * P)) * scale
      for (int64_t i = 0; i < seq; ++i) {
        const float* p = P + i * seq;
        float* gr = dS.data() + i * seq;
        const int64_t j0 = a.first_key(i);
        double dot = 0;
        for (int64_t j = j0; j <= i; ++j) dot += static_cast<double>(gr[j]) * p[j];
        for (int64_t j = j0; j <= i; ++j) gr[j] = p[j] * (gr[j] - static_cast<float>(dot)) * scale;
        std::fill(gr, gr + j0, 0.0f);
        std::fill(gr + i + 1, gr + seq, 0.0f);
      }
      // dQ = dS K, dK (+)= dS^T Q
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, H, S, 1.0f, dS.data(), S, v.k, v.ld, 0.0f, dq, ld);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, H, S, 1.0f, dS.data(), S, v.q, v.ld, beta, dk, ld);
    }
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

void relu2_forward(const Matrix& h, Matrix& g) {
  if (g.rows != h.rows || g.cols != h.cols) throw Error("relu2_forward: shapes differ");
#pragma omp parallel for
  for (int64_t i = 0; i < h.size(); ++i) {
    const float r = std::max(h.data[i], 0.0f);
    g.data[i] = r * r;
  }
}

void relu2_backward(const Matrix& dg, const Matrix& h, Matrix& dh) {
  if (dg.rows != h.rows || dg.cols != h.cols || dh.rows != h.rows || dh.cols != h.cols)
    throw Error("relu2_backward: shapes differ");
#pragma omp parallel for
  for (int64_t i = 0; i < h.size(); ++i) dh.data[i] = 2.0f * std::max(h.data[i], 0.0f) * dg.data[i];
}

void residual_mix_forward(const Matrix& x, const Matrix& x0, float a, float b, Matrix& y) {
  if (x0.size() != x.size() || y.size() != x.size()) throw Error("residual_mix_forward: shapes differ");
#pragma omp parallel for
  for (int64_t i = 0; i < x.size(); ++i) y.data[i] = a * x.data[i] + b * x0.data[i];
}

void residual_mix_backward(Matrix& dxy, const Matrix& x, const Matrix& x0, float a, float b, Matrix& dx0, float& da,
                           float& db) {
  if (x.size() != dxy.size() || x0.size() != dxy.size() || dx0.size() != dxy.size())
    throw Error("residual_mix_backward: shapes differ");
  // Per-row float64 partial sums, added in row order: deterministic for any thread count.
  std::vector<double> pa(static_cast<size_t>(dxy.rows)), pb(static_cast<size_t>(dxy.rows));
#pragma omp parallel for
  for (int64_t t = 0; t < dxy.rows; ++t) {
    float *g = dxy.row(t), *o = dx0.row(t);
    const float *xr = x.row(t), *x0r = x0.row(t);
    double sa = 0, sb = 0;
    for (int64_t c = 0; c < dxy.cols; ++c) {
      sa += static_cast<double>(g[c]) * xr[c];
      sb += static_cast<double>(g[c]) * x0r[c];
      o[c] += b * g[c];
      g[c] *= a;
    }
    pa[t] = sa;
    pb[t] = sb;
  }
  double sa = 0, sb = 0;
  for (int64_t t = 0; t < dxy.rows; ++t) sa += pa[t], sb += pb[t];
  da += static_cast<float>(sa);
  db += static_cast<float>(sb);
}

void softcap_forward(Matrix& z, float cap) {
#pragma omp parallel for
  for (int64_t i = 0; i < z.size(); ++i) z.data[i] = cap * std::tanh(z.data[i] / cap);
}

void softcap_backward(Matrix& dz, const Matrix& y, float cap) {
  if (dz.size() != y.size()) throw Error("softcap_backward: shapes differ");
#pragma omp parallel for
  for (int64_t i = 0; i < dz.size(); ++i) {
    const float t = y.data[i] / cap;
    dz.data[i] *= 1.0f - t * t;
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

void add(const Matrix& a, const Matrix& b, Matrix& out) {
  if (b.size() != a.size() || out.size() != a.size()) throw Error("add: shapes differ");
#pragma omp parallel for
  for (int64_t i = 0; i < a.size(); ++i) out.data[i] = a.data[i] + b.data[i];
}

}  // namespace q2::model::cpu
