#pragma once
// Registers the CUDA model backend as device "cuda" (model::make_backend). Called once at
// start-up by programs built with CUDA.
namespace q2::cuda {
void register_cuda_backend();
}  // namespace q2::cuda
