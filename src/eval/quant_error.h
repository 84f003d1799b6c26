#pragma once
// The quantizers' error and bias on one tensor: `quartet2 quant-error`.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/matrix.h"

namespace q2::eval {

struct QuantErrorRow {
  std::string quantizer;
  double rel_mse;       // ||Q(x) - x||^2 / ||x||^2 for one draw
  double rel_mse_mean;  // the same for the mean of `draws` independent draws
  bool stochastic;
};

// The quantizers compared, in report order.
const std::vector<std::string>& quant_error_quantizers();

// One dequantized draw of `quantizer` on x (MS-EDEN un-rotated back), for draw index k.
Matrix quantize_dequantize(const std::string& quantizer, const Matrix& x, uint64_t seed, uint64_t k);

// Bytes quant_error() holds at its peak on a rows x cols tensor, x included (measured: about 21 per
// element); an Error naming `what` when the sizes overflow.
uint64_t quant_error_bytes(int64_t rows, int64_t cols, const std::string& what);

// Calls progress(row) as each quantizer finishes (the whole run can take minutes).
std::vector<QuantErrorRow> quant_error(const Matrix& x, int draws, uint64_t seed,
                                       const std::function<void(const QuantErrorRow&)>& progress = {});

}  // namespace q2::eval
