#include "eval/quant_error.h"

#include <cmath>

#include "common/error.h"
#include "common/memory.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "quant/seeds.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::eval {

const std::vector<std::string>& quant_error_quantizers() {
  static const std::vector<std::string> names = {"rtn", "four_over_six", "sr", "sr_unscaled", "ms_eden", "ms_eden_h16"};
  return names;
}

namespace {
bool is_stochastic(const std::string& q) { return q != "rtn" && q != "four_over_six"; }
}  // namespace

Matrix quantize_dequantize(const std::string& q, const Matrix& x, uint64_t seed, uint64_t k) {
  const MatrixRef xr(x, "x");
  const uint64_t s1 = seeds::quantizer_draw(seed, k, 0), s2 = seeds::quantizer_draw(seed, k, 1);
  if (q == "rtn") return quant::quantize_rtn(xr).dequantize();
  if (q == "four_over_six") return quant::quantize_four_over_six(xr).dequantize();
  if (q == "sr") return quant::quantize_sr(xr, quant::kSrScaleOverride, s1).dequantize();
  if (q == "sr_unscaled") return quant::quantize_sr(xr, 1.0f, s1).dequantize();
  if (q == "ms_eden" || q == "ms_eden_h16") {
    const quant::Rht rot(q == "ms_eden" ? 128 : 16, s1);
    const Matrix y = quant::quantize_ms_eden(xr, rot, s2).dequantize();
    return quant::rht_inverse(MatrixRef(y, "ms_eden output"), rot);
  }
  throw Error("unknown quantizer '" + q + "'");
}

double rel_sq_error(const float* estimate, const float* exact, int64_t n) {
  double num = 0.0, den = 0.0;
#pragma omp parallel for reduction(+ : num, den)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(estimate[i]) - exact[i];
    num += d * d;
    den += static_cast<double>(exact[i]) * exact[i];
  }
  return den == 0.0 ? (num == 0.0 ? 0.0 : INFINITY) : num / den;
}

DrawErrors mean_of_draws(const Matrix& x, int n, const std::function<Matrix(uint64_t k)>& draw) {
  std::vector<double> sum(x.data.size(), 0.0);
  DrawErrors e{0.0, 0.0};
  for (int k = 0; k < n; ++k) {
    const Matrix d = draw(static_cast<uint64_t>(k));
    if (k == 0) e.single = rel_sq_error(d.data.data(), x.data.data(), x.size());
#pragma omp parallel for
    for (int64_t i = 0; i < x.size(); ++i) sum[i] += d.data[i];
  }
  std::vector<float> mean(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) mean[i] = static_cast<float>(sum[i] / n);
  e.mean = rel_sq_error(mean.data(), x.data.data(), x.size());
  return e;
}

uint64_t quant_error_bytes(int64_t rows, int64_t cols, const std::string& what) {
  constexpr int64_t kBytesPerElement = 24;  // x, the float64 sum of the draws, a draw and its intermediates
  const int64_t elements = checked_mul(rows, cols, what);
  return static_cast<uint64_t>(checked_mul(elements, kBytesPerElement, what + " (elements x bytes each)"));
}

std::vector<QuantErrorRow> quant_error(const Matrix& x, int draws, uint64_t seed,
                                       const std::function<void(const QuantErrorRow&)>& progress) {
  if (draws < 1) throw Error("--draws must be at least 1 (got " + std::to_string(draws) + ")");
  std::vector<QuantErrorRow> rows;
  for (const std::string& q : quant_error_quantizers()) {
    const bool stochastic = is_stochastic(q);
    // Deterministic quantizers give identical draws: one suffices.
    const DrawErrors e = mean_of_draws(x, stochastic ? draws : 1, [&](uint64_t k) { return quantize_dequantize(q, x, seed, k); });
    QuantErrorRow row{q, e.single, e.mean, stochastic};
    if (progress) progress(row);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace q2::eval
