#pragma once
// Writes a model as safetensors with Hugging Face Llama tensor names (fused QKV and gate|up
// split back into q/k/v and gate/up), float32 or bf16. Grouped-query attention (k and v of
// n_kv_heads), a tied head (lm_head written as a copy of the embedding) and norms without
// gains (written as ones) carry over; a model with another option a Llama checkpoint cannot
// express (ReLU^2, QK norm, ...) is refused, naming the options.
#include <string>

#include "model/transformer.h"

namespace q2::train {

void export_safetensors(model::Transformer& model, const std::string& path, bool bf16);

}  // namespace q2::train
