#pragma once
// Muon on the GPU (model/muon.h), one [rows, cols] block: the momentum, normalization, variance
// reduction and update are kernels of cuda/ops (the momentum bit-identical to the CPU's); the
// orthogonalization's products go through `gemm`'s Backend::matmul on BF16 tensors (the CUDA
// backend's: cuBLASLt, float32 accumulation, BF16 results), on the short side. Asynchronous on
// stream 0; w, g, m and v are device pointers.
#include <cstdint>

#include "model/backend.h"

namespace q2::cuda {

// w, g and m hold rows * cols float32 values, v model::muon_second_moment_size(rows, cols).
void muon_step(model::Backend& gemm, float* w, const float* g, float* m, float* v, int64_t rows, int64_t cols,
               const model::MuonHyper& h);

}  // namespace q2::cuda
