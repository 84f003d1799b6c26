#include "eval/grad_error.h"

#include <cblas.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/memory.h"
#include "common/npy.h"
#include "format/bf16_matrix.h"
#include "gemm/gemm.h"
#include "linear/linear.h"
#include "quant/distributions.h"
#include "quant/seeds.h"

namespace q2::eval {

LayerOperands default_operands(int64_t m, int64_t k, int64_t n, uint64_t seed) {
  return {quant::random_matrix(m, k, quant::Dist::kGaussian, seeds::experiment_operand(seed, 0)),
          quant::random_matrix(n, k, quant::Dist::kGaussian, seeds::experiment_operand(seed, 1),
                               1.0 / std::sqrt(static_cast<double>(k))),
          quant::random_matrix(m, n, quant::Dist::kStudent3, seeds::experiment_operand(seed, 2))};
}

LayerOperands load_operands(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) throw Error("--load: '" + dir + "' is not a directory");
  LayerOperands ops{load_npy(dir + "/x.npy"), load_npy(dir + "/w.npy"), load_npy(dir + "/dy.npy")};
  if (ops.x.cols != ops.w.cols || ops.dy.rows != ops.x.rows || ops.dy.cols != ops.w.rows)
    throw Error("--load '" + dir + "': shapes do not form a linear layer: x [" + std::to_string(ops.x.rows) + ", " +
                std::to_string(ops.x.cols) + "], w [" + std::to_string(ops.w.rows) + ", " + std::to_string(ops.w.cols) +
                "], dy [" + std::to_string(ops.dy.rows) + ", " + std::to_string(ops.dy.cols) +
                "] (need x [M, K], w [N, K], dy [M, N])");
  return ops;
}

std::vector<double> product_nt_f64(const Matrix& a, const Matrix& b) {
  std::vector<double> ad(a.data.begin(), a.data.end()), bd(b.data.begin(), b.data.end()), out(a.rows * b.rows);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(a.rows), static_cast<int>(b.rows),
              static_cast<int>(a.cols), 1.0, ad.data(), static_cast<int>(a.cols), bd.data(), static_cast<int>(b.cols),
              0.0, out.data(), static_cast<int>(b.rows));
  return out;
}

namespace {

// Of est / divisor (a sum of draws and their count: their mean, without a copy).
double rel_err(const std::vector<double>& est, const std::vector<double>& ref, double divisor = 1) {
  double num = 0, den = 0;
  for (size_t i = 0; i < est.size(); ++i) {
    const double d = est[i] / divisor - ref[i];
    num += d * d, den += ref[i] * ref[i];
  }
  return den == 0 ? 0 : num / den;
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return aa == 0 || bb == 0 ? 0 : ab / std::sqrt(aa * bb);
}

std::vector<double> as_f64(const Matrix& m) { return {m.data.begin(), m.data.end()}; }

// Sums one backward product's draws; records the curve and, at the half, the first half's sum.
class DrawMeans {
 public:
  DrawMeans(const std::vector<double>& target, int draws)
      : target_(target), draws_(draws), sum_(target.size(), 0.0) {}

  void add(const std::vector<double>& draw) {
    for (size_t i = 0; i < draw.size(); ++i) sum_[i] += draw[i];
    ++n_;
    if ((n_ & (n_ - 1)) == 0 || n_ == draws_) curve_.push_back({n_, rel_err(sum_, target_, n_)});
    if (n_ == draws_ / 2) half_ = sum_;
  }

  void finish(ProductError& p) const {
    p.rel_err_mean = curve_.back().rel_err_mean;
    p.curve = curve_;
    double along = 0, norm = 0;
    for (size_t i = 0; i < sum_.size(); ++i) {
      along += (sum_[i] / n_ - target_[i]) * target_[i];
      norm += target_[i] * target_[i];
    }
    p.bias_along = norm == 0 ? 0 : along / norm;
    p.bias2 = std::nan("");
    if (draws_ < 2) return;
    const int a = draws_ / 2, b = draws_ - a;
    double cross = 0, den = 0;
    for (size_t i = 0; i < sum_.size(); ++i) {
      cross += (half_[i] / a - target_[i]) * ((sum_[i] - half_[i]) / b - target_[i]);
      den += target_[i] * target_[i];
    }
    p.bias2 = den == 0 ? 0 : cross / den;
  }

 private:
  const std::vector<double>& target_;
  int draws_, n_ = 0;
  std::vector<double> sum_, half_;
  std::vector<CurvePoint> curve_;
};

}  // namespace

uint64_t grad_error_bytes(int64_t m, int64_t k, int64_t n, const std::string& what) {
  // Per element: the operand, its transpose, float64 products and copies, the draws' sums.
  const struct {
    int64_t rows, cols, bytes_per_element;
  } terms[] = {{m, k, 72}, {n, k, 64}, {m, n, 48}};
  int64_t total = 0;
  for (const auto& t : terms) {
    const int64_t elements = checked_mul(t.rows, t.cols, what);
    const int64_t bytes = checked_mul(elements, t.bytes_per_element, what + " (elements x bytes each)");
    if (__builtin_add_overflow(total, bytes, &total)) throw Error(what + ": needs more than 8 EiB of memory");
  }
  return static_cast<uint64_t>(total);
}

LayerOperands round_to_bf16(LayerOperands ops) {
  for (Matrix* m : {&ops.x, &ops.w, &ops.dy}) *m = bf16::round(std::move(*m));
  return ops;
}

std::vector<ProductError> grad_error(const LayerOperands& ops, const linear::Scheme& scheme, int draws, uint64_t seed,
                                     model::Backend& backend, const std::function<void(int)>& progress) {
  if (draws < 1) throw Error("--draws must be at least 1 (got " + std::to_string(draws) + ")");
  const auto cpu_gemm = gemm::make_cpu_backend();
  const linear::Linear layer(scheme, *cpu_gemm, "grad-error");
  const Matrix xt = transpose(ops.x), dyt = transpose(ops.dy), wt = transpose(ops.w);

  // Exact products of the unquantized operands, and the products the backward estimates: dY as
  // the backward reads it (BF16 in most schemes, a bias that is not the quantizers') times the
  // operands as the forward used them.
  const std::vector<double> y_exact = product_nt_f64(ops.x, ops.w);
  const std::vector<double> dx_exact = product_nt_f64(ops.dy, wt), dw_exact = product_nt_f64(dyt, xt);
  const Matrix x_used = layer.forward_x(ops.x).values(), w_used = layer.forward_w(ops.w).values();
  const Matrix dy_used = layer.backward_dy(ops.dy);
  const std::vector<double> dx_target = product_nt_f64(dy_used, transpose(w_used));
  const std::vector<double> dw_target = product_nt_f64(transpose(dy_used), transpose(x_used));

  auto upload = [&](const Matrix& m, model::Role role) {
    model::Tensor t = backend.alloc(m.rows, m.cols, role);
    backend.upload(m, t);
    return t;
  };
  const model::Tensor x = upload(ops.x, model::Role::kActivation), w = upload(ops.w, model::Role::kParam);
  const model::Tensor dy = upload(ops.dy, model::Role::kActivation);
  model::Tensor dw = backend.alloc(ops.w.rows, ops.w.cols, model::Role::kParam);
  const std::unique_ptr<model::LinearOp> op = backend.make_linear(scheme, "grad-error");
  const std::vector<double> y = as_f64(backend.download(op->forward(x, w, true)));
  std::vector<ProductError> out;
  out.push_back({"fwd", rel_err(y, y_exact), cosine(y, y_exact), rel_err(y, y_exact), {}, 0});

  DrawMeans dx_means(dx_target, draws), dw_means(dw_target, draws);
  ProductError dgrad{"dgrad", 0, 0, 0, {}, 0}, wgrad{"wgrad", 0, 0, 0, {}, 0};
  for (int k = 0; k < draws; ++k) {
    backend.zero(dw);  // the layer accumulates into it
    const std::vector<double> dx = as_f64(backend.download(op->backward(dy, seeds::experiment_backward(seed, k), dw)));
    const std::vector<double> dw_draw = as_f64(backend.download(dw));
    if (k == 0) {
      dgrad.rel_err = rel_err(dx, dx_exact);
      dgrad.cosine = cosine(dx, dx_exact);
      wgrad.rel_err = rel_err(dw_draw, dw_exact);
      wgrad.cosine = cosine(dw_draw, dw_exact);
    }
    dx_means.add(dx);
    dw_means.add(dw_draw);
    if (progress) progress(k + 1);
  }
  dx_means.finish(dgrad);
  dw_means.finish(wgrad);
  out.push_back(dgrad);
  out.push_back(wgrad);
  return out;
}

}  // namespace q2::eval
