// The CPU backend: tensors are float32 host matrices; ops are model/cpu_ops.h, linears are
// linear::Linear over the exact CPU GEMM.
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/memory.h"
#include "gemm/gemm.h"
#include "linear/linear.h"
#include "model/backend.h"
#include "model/collectives.h"
#include "model/cpu_muon.h"
#include "model/cpu_ops.h"
#include "model/muon.h"

namespace q2::model {

namespace {

Matrix& mat(Tensor& t) { return *static_cast<Matrix*>(t.owner.get()); }
const Matrix& mat(const Tensor& t) { return *static_cast<const Matrix*>(t.owner.get()); }
// A norm's gain, or null for an empty tensor (a norm without one).
const float* gain(const Tensor& w) { return w.owner ? mat(w).data.data() : nullptr; }
float* gain(Tensor& w) { return w.owner ? mat(w).data.data() : nullptr; }
// Element i of a parameter vector.
float& at(Tensor& v, int64_t i) { return mat(v).data.at(static_cast<size_t>(i)); }
float at(const Tensor& v, int64_t i) { return mat(v).data.at(static_cast<size_t>(i)); }

Tensor wrap(Matrix m) {
  auto owner = std::make_shared<Matrix>(std::move(m));
  Tensor t;
  t.rows = owner->rows;
  t.cols = owner->cols;
  t.data = owner->data.data();
  t.owner = owner;
  return t;
}

// A float vector as a [1, n] tensor.
Tensor wrap_vector(std::vector<float> v) {
  Matrix m(1, static_cast<int64_t>(v.size()));
  m.data = std::move(v);
  return wrap(std::move(m));
}

// Zero rows make whole quantization groups along tokens; they quantize to zero and leave
// every product unchanged.
Matrix pad_rows(const Matrix& m, int64_t rows) {
  if (rows == m.rows) return m;
  Matrix p(rows, m.cols);
  std::copy(m.data.begin(), m.data.end(), p.data.begin());
  return p;
}

class CpuLinear final : public LinearOp {
 public:
  CpuLinear(const linear::Scheme& s, const gemm::Backend& g, const std::string& name) : lin_(s, g, name) {}

  Tensor forward(const Tensor& x, const Tensor& w, bool keep) override {
    const int64_t padded = lin_.plan().padded_rows(x.rows);
    linear::Saved scratch;
    return wrap(first_rows(lin_.forward(pad_rows(mat(x), padded), mat(w), keep ? saved_ : scratch), x.rows));
  }

  Tensor backward(const Tensor& dy, uint64_t seed, Tensor& dw) override {
    linear::Grads g = lin_.backward(pad_rows(mat(dy), saved_.x.rows()), saved_, seed);
    cpu::add(mat(dw), g.dw, mat(dw));
    return wrap(first_rows(std::move(g.dx), dy.rows));
  }

  size_t saved_bytes() const override { return saved_.x.bytes(); }
  void release() override { saved_ = linear::Saved{}; }

 private:
  linear::Linear lin_;
  linear::Saved saved_;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Collectives* in_process) : collectives_(in_process ? *in_process : single_rank()) {}
  std::string name() const override { return "cpu"; }
  std::string describe() const override { return "cpu (float32; NVFP4 products emulated exactly)"; }
  uint64_t free_memory_bytes() override { return available_host_memory(); }
  Tensor alloc(int64_t rows, int64_t cols, Role) override { return wrap(Matrix(rows, cols)); }
  Tensor alloc_uninit(int64_t rows, int64_t cols, Role) override {
    Matrix m(rows, cols);
    std::fill(m.data.begin(), m.data.end(), std::numeric_limits<float>::quiet_NaN());
    return wrap(std::move(m));
  }
  void upload(const Matrix& src, Tensor& dst) override {
    if (src.rows != dst.rows || src.cols != dst.cols) throw Error("upload: shapes differ");
    mat(dst).data = src.data;
    dst.data = mat(dst).data.data();
  }
  Matrix download(const Tensor& t) override { return mat(t); }
  Tensor clone(const Tensor& t) override { return wrap(mat(t)); }
  void zero(Tensor& t) override { std::fill(mat(t).data.begin(), mat(t).data.end(), 0.0f); }

  std::unique_ptr<LinearOp> make_linear(const linear::Scheme& s, const std::string& name) override {
    return std::make_unique<CpuLinear>(s, *gemm_, name);
  }

  void embedding_forward(const Tensor& table, const std::vector<uint32_t>& ids, Tensor& out) override {
    cpu::embedding_forward(mat(table), ids, mat(out));
  }
  void embedding_backward(const Tensor& dout, const std::vector<uint32_t>& ids, Tensor& dtable) override {
    cpu::embedding_backward(mat(dout), ids, mat(dtable));
  }
  void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    std::vector<float> r;
    cpu::rmsnorm_forward(mat(x), gain(w), eps, mat(y), r);
    rstd = wrap_vector(std::move(r));
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    cpu::rmsnorm_backward(mat(dy), mat(x), gain(w), mat(rstd).data, mat(dx), gain(dw));
  }
  void head_rmsnorm_forward(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, double eps,
                            Tensor& rstd) override {
    std::vector<float> r;
    cpu::head_rmsnorm_forward(mat(x), col0, n_heads, head_dim, eps, r);
    rstd = wrap_vector(std::move(r));
  }
  void head_rmsnorm_backward(Tensor& dy, const Tensor& y, int64_t col0, int64_t n_heads, int64_t head_dim,
                             const Tensor& rstd) override {
    cpu::head_rmsnorm_backward(mat(dy), mat(y), col0, n_heads, head_dim, mat(rstd).data);
  }
  void rope(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta,
            int direction) override {
    cpu::rope(mat(x), col0, n_heads, head_dim, seq, theta, direction);
  }
  void attention_forward(const Tensor& qkv, const AttentionDims& a, Tensor& out, Tensor& cache) override {
    std::vector<float> probs;
    cpu::attention_forward(mat(qkv), a, mat(out), probs);
    cache = wrap_vector(std::move(probs));
  }
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& cache, const AttentionDims& a,
                          Tensor& dqkv) override {
    cpu::attention_backward(mat(dout), mat(qkv), mat(cache).data, a, mat(dqkv));
  }
  void swiglu_forward(const Tensor& h12, Tensor& g) override { cpu::swiglu_forward(mat(h12), mat(g)); }
  void swiglu_backward(const Tensor& dg, const Tensor& h12, Tensor& dh12) override {
    cpu::swiglu_backward(mat(dg), mat(h12), mat(dh12));
  }
  void relu2_forward(const Tensor& h, Tensor& g) override { cpu::relu2_forward(mat(h), mat(g)); }
  void relu2_backward(const Tensor& dg, const Tensor& h, Tensor& dh) override {
    cpu::relu2_backward(mat(dg), mat(h), mat(dh));
  }
  void residual_mix_forward(const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                            Tensor& y) override {
    cpu::residual_mix_forward(mat(x), mat(x0), at(a, i), at(b, i), mat(y));
  }
  void residual_mix_backward(Tensor& dxy, const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                             Tensor& dx0, Tensor& da, Tensor& db) override {
    cpu::residual_mix_backward(mat(dxy), mat(x), mat(x0), at(a, i), at(b, i), mat(dx0), at(da, i), at(db, i));
  }
  void softcap_forward(Tensor& logits, float cap) override { cpu::softcap_forward(mat(logits), cap); }
  void softcap_backward(Tensor& dlogits, const Tensor& capped, float cap) override {
    cpu::softcap_backward(mat(dlogits), mat(capped), cap);
  }
  void add(const Tensor& a, const Tensor& b, Tensor& out) override { cpu::add(mat(a), mat(b), mat(out)); }
  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha, bool acc) override {
    cpu::matmul(mat(a), ta, mat(b), tb, mat(c), alpha, acc);
  }
  double cross_entropy(const Tensor& logits, const std::vector<uint32_t>& targets, Tensor* dlogits,
                       float scale) override {
    return cpu::cross_entropy(mat(logits), targets, dlogits ? &mat(*dlogits) : nullptr, scale);
  }

  std::vector<double> sum_squares(const std::vector<const Tensor*>& tensors) override {
    std::vector<double> out;
    for (const Tensor* t : tensors) {
      double s = 0;
      for (float v : mat(*t).data) s += static_cast<double>(v) * v;
      out.push_back(s);
    }
    return out;
  }
  void scale(Tensor& t, float s) override {
    for (float& v : mat(t).data) v *= s;
  }
  void adamw(Tensor& wt, const Tensor& gt, Tensor& mt, Tensor& vt, const AdamWHyper& h, bool decay) override {
    float *w = mat(wt).data.data(), *m = mat(mt).data.data(), *v = mat(vt).data.data();
    const float* g = mat(gt).data.data();
    const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(h.t)), bc2 = 1 - std::pow(h.beta2, static_cast<double>(h.t));
    const float b1 = static_cast<float>(h.beta1), b2 = static_cast<float>(h.beta2);
    const float step = static_cast<float>(h.lr / bc1), inv_bc2 = static_cast<float>(1.0 / bc2);
    const float keep = decay ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f, eps = static_cast<float>(h.eps);
#pragma omp parallel for
    for (int64_t j = 0; j < wt.size(); ++j) {
      const float gj = g[j] * h.grad_scale;
      m[j] = b1 * m[j] + (1 - b1) * gj;
      v[j] = b2 * v[j] + (1 - b2) * gj * gj;
      w[j] = w[j] * keep - step * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
    }
  }

  void muon(Tensor& wt, const Tensor& gt, Tensor& mt, Tensor& vt, const std::vector<int64_t>& blocks,
            const MuonHyper& h) override {
    for_each_muon_block(wt, gt, mt, vt, blocks, [&](int64_t at, int64_t moment, int64_t rows) {
      cpu::muon_step(mat(wt).data.data() + at, mat(gt).data.data() + at, mat(mt).data.data() + at,
                     mat(vt).data.data() + moment, rows, wt.cols, h);
    });
  }

  Collectives& collectives() override { return collectives_; }

 private:
  std::unique_ptr<gemm::Backend> gemm_ = gemm::make_cpu_backend();
  Collectives& collectives_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(Collectives* in_process) { return std::make_unique<CpuBackend>(in_process); }

}  // namespace q2::model
