#pragma once
// Which scheme each block linear runs under: the run's scheme, except where the per-layer
// precision overrides keep a linear in BF16 (the first and last blocks, as Megatron's
// --first-last-layers-bf16 and NVIDIA's NVFP4 recipe do, or chosen linears of every block).
// The one place that decides it: the Transformer asks its backend for each linear under the
// scheme given here, so the CPU and CUDA backends execute the same assignment, and the memory
// plan counts it.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "linear/scheme.h"
#include "model/config.h"

namespace q2::model {

// Linears per block: fused qkv, o, fused gate|up (or up), down.
constexpr int kBlockLinears = 4;

// The block linears' names within a block, in the order the Transformer makes them:
// "attention.wqkv", "attention.wo", "feed_forward.w12" (SwiGLU's fused gate|up; the ReLU^2 MLP's
// up projection is "feed_forward.w1"), "feed_forward.w3". Linear w of layer l is the model's
// linear kBlockLinears l + w, the index its seeds are drawn by (seeds::linear_layer).
std::array<std::string, kBlockLinears> block_linear_names(const ModelConfig& c);

// The config's method.bf16_first_layers, method.bf16_last_layers and method.bf16_linears.
struct PrecisionOverrides {
  int64_t bf16_first_layers = 0, bf16_last_layers = 0;  // whole blocks in BF16, from either end
  std::vector<std::string> bf16_linears{};               // block_linear_names, in BF16 in every block
  bool operator==(const PrecisionOverrides&) const = default;
};

// Throws q2::Error naming the key and its value: a layer count outside [0, n_layers], a linear
// name the model does not have (listing its names) or one given twice.
void validate(const PrecisionOverrides& o, const ModelConfig& c);

// The scheme of every block linear of a model of config c, index kBlockLinears l + w: bf16 where
// `o` puts it, else `scheme`. Validates `o`.
std::vector<linear::Scheme> linear_schemes(const ModelConfig& c, const linear::Scheme& scheme,
                                           const PrecisionOverrides& o);

// The assignment for the log, one line per run of layers alike: "layers 0-1: bf16",
// "layers 2-5: attention.wqkv quartet2, attention.wo bf16, ...".
std::string describe_linear_schemes(const ModelConfig& c, const std::vector<linear::Scheme>& schemes);

}  // namespace q2::model
