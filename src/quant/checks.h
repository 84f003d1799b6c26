#pragma once
// Input validation shared by every quantizer: errors name the tensor and the problem.
#include "common/matrix.h"

namespace q2::quant {

// Requires a non-empty matrix whose rows split into whole groups of `group` elements.
void check_shape(const MatrixRef& x, int64_t group, const char* what);

// Returns max |x|; throws naming the first NaN or Inf (row, column) found.
float checked_amax(const MatrixRef& x);

}  // namespace q2::quant
