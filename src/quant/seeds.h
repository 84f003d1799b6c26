#pragma once
// Every seed stream of quartet2, named in one place. A training run's seed becomes one seed per
// backward call (micro-step and rank), that one seed per linear layer, and that one seed per
// randomized choice of the layer: the rotation shared by its four backward operands and the
// rounding of each operand. Each derivation is philox::derive_seed (a Philox draw), so streams
// with different names never share randomness. Changing a number here changes every random
// stream of training and of the published figures: treat them as part of the file formats.
#include <cstdint>

#include "quant/philox.h"

namespace q2::seeds {

// The randomized choices of one linear layer's backward call.
enum class LinearStream : uint64_t {
  kRotation = 0,  // the randomized Hadamard signs, shared by all four operands
  kDgradA = 1,    // rounding of dgrad's A (dY)
  kDgradB = 2,    // rounding of dgrad's B (W^T)
  kWgradA = 3,    // rounding of wgrad's A (dY^T)
  kWgradB = 4,    // rounding of wgrad's B (X^T)
  kRotation2 = 5,  // the second rotation's signs (Scheme::hadamard_rounds = 2), shared as kRotation's
};

// The seed of backward call `draw` of a run seeded with `run_seed` (the trainer numbers its
// calls (step * grad_accum + micro) * world + rank).
inline uint64_t backward_call(uint64_t run_seed, int64_t draw) {
  return philox::derive_seed(run_seed, static_cast<uint64_t>(draw));
}

// The seed of linear layer `index` (in the model's order) within one backward call.
inline uint64_t linear_layer(uint64_t call_seed, int64_t index) {
  return philox::derive_seed(call_seed, static_cast<uint64_t>(index));
}

// One randomized choice of a linear layer's backward call.
inline uint64_t linear_stream(uint64_t layer_seed, LinearStream s) {
  return philox::derive_seed(layer_seed, static_cast<uint64_t>(s));
}

// The initial values of parameter `index` of a model seeded with `seed`.
inline uint64_t parameter_init(uint64_t seed, uint64_t index) { return philox::derive_seed(seed, index); }

// Experiments (eval/): the synthetic layer operands X, W, dY (which = 0, 1, 2) ...
inline uint64_t experiment_operand(uint64_t seed, int which) {
  return philox::derive_seed(seed, 100 + static_cast<uint64_t>(which));
}
// ... repeated backward draws of one layer ...
inline uint64_t experiment_backward(uint64_t seed, int64_t draw) {
  return philox::derive_seed(seed, 1000 + static_cast<uint64_t>(draw));
}
// ... and the two seeds (rotation or rounding first, then rounding) of quantizer draw `draw`.
inline uint64_t quantizer_draw(uint64_t seed, uint64_t draw, int which) {
  return philox::derive_seed(seed, 2 * draw + static_cast<uint64_t>(which));
}

}  // namespace q2::seeds
