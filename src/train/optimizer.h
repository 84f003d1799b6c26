#pragma once
// Learning-rate schedules and AdamW with decoupled weight decay, over float32 master weights.
#include <cstdint>
#include <vector>

#include "model/transformer.h"
#include "train/config.h"

namespace q2::train {

// cosine: over the warmup, a cosine rise from lr/100 to lr, then a cosine fall to
// lr * min_lr_ratio (the paper's OneCycle schedule). wsd: the same warmup, constant lr, then
// a linear fall to lr * min_lr_ratio over the last decay_frac of the steps.
double learning_rate(const TrainConfig& c, int64_t step);

class AdamW {
 public:
  AdamW(model::Backend& backend, const std::vector<model::Param>& params);
  // One update with bias correction; `t` counts updates from 1.
  void step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr,
            const TrainConfig& c, int64_t t);
  std::vector<model::Tensor>& m() { return m_; }
  std::vector<model::Tensor>& v() { return v_; }

 private:
  model::Backend& backend_;
  std::vector<model::Tensor> m_, v_;
};

// Global L2 norm of the gradients (float64, in order: deterministic).
double grad_norm(model::Backend& backend, const std::vector<model::Tensor>& grads);
void scale_grads(model::Backend& backend, std::vector<model::Tensor>& grads, float s);

}  // namespace q2::train
