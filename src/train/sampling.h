#pragma once
// Text generation from a trained model: temperature and top-k sampling.
#include <cstdint>
#include <vector>

#include "model/transformer.h"

namespace q2::train {

struct SampleOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 40;        // 0: the whole vocabulary
  uint64_t seed = 0;
};

// Appends sampled tokens to `prompt` (the context is cut to the model's sequence length).
std::vector<uint32_t> sample(model::Transformer& model, std::vector<uint32_t> prompt, const SampleOptions& o);

}  // namespace q2::train
