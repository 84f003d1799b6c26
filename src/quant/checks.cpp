#include "quant/checks.h"

#include <cmath>
#include <string>

#include "common/error.h"

namespace q2::quant {

void check_shape(const MatrixRef& x, int64_t group, const char* what) {
  if (x.rows <= 0 || x.cols <= 0)
    throw Error("tensor '" + x.name + "' is empty (shape [" + std::to_string(x.rows) + ", " +
                std::to_string(x.cols) + "])");
  if (x.cols % group != 0)
    throw Error("tensor '" + x.name + "': row length " + std::to_string(x.cols) + " is not a multiple of " +
                std::to_string(group) + " (" + what + ")");
}

float checked_amax(const MatrixRef& x) {
  float amax = 0.0f;
  bool finite = true;
#pragma omp parallel for reduction(max : amax) reduction(&& : finite)
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* p = x.row(r);
    for (int64_t c = 0; c < x.cols; ++c) {
      finite = finite && std::isfinite(p[c]);
      amax = std::max(amax, std::fabs(p[c]));
    }
  }
  if (!finite) {
    for (int64_t r = 0; r < x.rows; ++r)
      for (int64_t c = 0; c < x.cols; ++c)
        if (!std::isfinite(x.row(r)[c]))
          throw Error("tensor '" + x.name + "' contains " + (std::isnan(x.row(r)[c]) ? "NaN" : "Inf") +
                      " at [" + std::to_string(r) + ", " + std::to_string(c) + "]");
  }
  return amax;
}

}  // namespace q2::quant
