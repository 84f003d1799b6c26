#include "train/optimizer.h"

#include <cmath>

namespace q2::train {

double learning_rate(const TrainConfig& c, int64_t step) {
  const double warm = std::floor(c.warmup_frac * c.steps), lo = c.lr * c.min_lr_ratio;
  if (step < warm) return c.lr / 100 + (c.lr - c.lr / 100) * 0.5 * (1 - std::cos(M_PI * (step + 1) / warm));
  if (c.schedule == "wsd") {
    const double decay_start = c.steps * (1 - c.decay_frac);
    if (step < decay_start) return c.lr;
    return c.lr + (lo - c.lr) * std::min(1.0, (step + 1 - decay_start) / (c.steps - decay_start));
  }
  const double p = std::min(1.0, (step - warm + 1) / std::max(1.0, c.steps - warm));
  return lo + (c.lr - lo) * 0.5 * (1 + std::cos(M_PI * p));
}

AdamW::AdamW(const std::vector<model::Param>& params) {
  for (const model::Param& p : params) {
    m_.emplace_back(p.value.rows, p.value.cols);
    v_.emplace_back(p.value.rows, p.value.cols);
  }
}

void AdamW::step(std::vector<model::Param>& params, const std::vector<Matrix>& grads, double lr, const TrainConfig& c,
                 int64_t t) {
  const double bc1 = 1 - std::pow(c.beta1, static_cast<double>(t)), bc2 = 1 - std::pow(c.beta2, static_cast<double>(t));
  for (size_t i = 0; i < params.size(); ++i) {
    float *w = params[i].value.data.data(), *m = m_[i].data.data(), *v = v_[i].data.data();
    const float* g = grads[i].data.data();
    const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
    const float step_size = static_cast<float>(lr / bc1), inv_bc2 = static_cast<float>(1.0 / bc2);
    const float decay = params[i].decay ? static_cast<float>(1.0 - lr * c.weight_decay) : 1.0f;
    const float eps = static_cast<float>(c.eps);
#pragma omp parallel for
    for (int64_t j = 0; j < params[i].value.size(); ++j) {
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
      w[j] = w[j] * decay - step_size * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
    }
  }
}

double grad_norm(const std::vector<Matrix>& grads) {
  double s = 0;
  for (const Matrix& g : grads)
    for (float v : g.data) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}

void scale_grads(std::vector<Matrix>& grads, float s) {
  for (Matrix& g : grads)
    for (float& v : g.data) v *= s;
}

}  // namespace q2::train
