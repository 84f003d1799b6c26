#pragma once
// How far a quantizer's output lies from its input: the relative squared error of one draw and of
// the mean of n independent draws (for an unbiased quantizer the latter falls as 1/n). Used by
// `quartet2 quant-error` (eval/quant_error.h) and by the quantizers' unbiasedness tests.
#include <cstdint>
#include <functional>

#include "common/matrix.h"

namespace q2::quant {

// ||estimate - exact||^2 / ||exact||^2, in float64.
double rel_sq_error(const float* estimate, const float* exact, int64_t n);

// Relative squared error of draw 0 alone and of the mean of draws 0..n-1 against x.
struct DrawErrors {
  double single, mean;
};
DrawErrors mean_of_draws(const Matrix& x, int n, const std::function<Matrix(uint64_t k)>& draw);

}  // namespace q2::quant
