#include "eval/quant_error.h"

#include <cmath>

#include "common/error.h"
#include "common/memory.h"
#include "quant/error_stats.h"
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
    const quant::DrawErrors e =
        quant::mean_of_draws(x, stochastic ? draws : 1, [&](uint64_t k) { return quantize_dequantize(q, x, seed, k); });
    QuantErrorRow row{q, e.single, e.mean, stochastic};
    if (progress) progress(row);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace q2::eval
