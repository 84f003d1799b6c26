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

AdamW::AdamW(model::Backend& backend, const std::vector<model::Param>& params) : backend_(backend) {
  for (const model::Param& p : params) {
    m_.push_back(backend.alloc(p.value.rows, p.value.cols, model::Role::kParam));
    v_.push_back(backend.alloc(p.value.rows, p.value.cols, model::Role::kParam));
  }
}

void AdamW::step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr,
                 const TrainConfig& c, int64_t t) {
  const model::AdamWHyper h{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t};
  for (size_t i = 0; i < params.size(); ++i) backend_.adamw(params[i].value, grads[i], m_[i], v_[i], h, params[i].decay);
}

double grad_norm(model::Backend& backend, const std::vector<model::Tensor>& grads) {
  double s = 0;
  for (const model::Tensor& g : grads) s += backend.sum_squares(g);
  return std::sqrt(s);
}

void scale_grads(model::Backend& backend, std::vector<model::Tensor>& grads, float s) {
  for (model::Tensor& g : grads) backend.scale(g, s);
}

}  // namespace q2::train
