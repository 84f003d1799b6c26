#pragma once
// Writes a model as safetensors with Hugging Face Llama tensor names (fused QKV and gate|up
// split back into q/k/v and gate/up), float32 or bf16.
#include <string>

#include "model/transformer.h"

namespace q2::train {

void export_safetensors(model::Transformer& model, const std::string& path, bool bf16);

}  // namespace q2::train
