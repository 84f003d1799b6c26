#pragma once
// A model's weights under Hugging Face Llama tensor names (fused QKV and gate|up split back into
// q/k/v and gate/up). Dense exports are the float32 master weights (or their BF16 rounding); the
// NVFP4 export holds each block linear as the trained forward pass quantized it (nvfp4_export.h)
// and the other tensors in BF16. Grouped-query attention (k and v of n_kv_heads), a tied head
// (lm_head written as a copy of the embedding) and norms without gains (written as ones) carry
// over; a model with another option a Llama checkpoint cannot express (ReLU^2, QK norm, ...) is
// refused, naming the options.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "format/nvfp4.h"
#include "model/transformer.h"

namespace q2::train {

enum class WeightFormat { kF32, kBf16, kNvfp4 };

// The quantized weight of a block linear as the forward pass computes it, from its float32
// master weight (`name`: the checkpoint's parameter name, for errors).
using WeightQuantizer = std::function<NVFP4Tensor(const Matrix& w, const std::string& name)>;
// Activation input_scales of the block linears, by weight name ("layers.0.attention.wqkv.weight").
using InputScales = std::map<std::string, float>;

// Throws naming every option of `c` that a Llama checkpoint cannot express.
void check_llama_expressible(const model::ModelConfig& c);

// The model's tensors in Llama order and naming; `quantize` is used (and required) for kNvfp4
// only, as are `input_scales` (each quantized linear's "<name>.input_scale" where given).
std::vector<SafeTensor> llama_tensors(model::Transformer& model, WeightFormat format,
                                      const WeightQuantizer& quantize = {}, const InputScales& input_scales = {});

// safetensors metadata naming the quartet2 model config it came from.
nlohmann::json export_metadata(const model::ModelConfig& c);

// One .safetensors file of the dense weights, float32 or BF16.
void export_safetensors(model::Transformer& model, const std::string& path, bool bf16);

}  // namespace q2::train
