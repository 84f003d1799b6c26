#include "quant/error_stats.h"

#include <cmath>
#include <vector>

namespace q2::quant {

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

}  // namespace q2::quant
