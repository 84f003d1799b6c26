#pragma once
// Registers the CUDA model backend as device "cuda" (model::make_backend). Called once at
// start-up by programs built with CUDA.
#include "model/config.h"

namespace q2::cuda {
void register_cuda_backend();

// Throws q2::Error naming every option of `c` the CUDA backend does not implement yet
// (grouped-query and sliding-window attention: they run on the CPU backend only for now); the
// backend calls it before a model allocates anything. Needs no GPU.
void check_model_supported(const model::ModelConfig& c);
}  // namespace q2::cuda
