#pragma once
// Device tensors of the CUDA backend (model::Tensor with device memory). All GPU work of the
// training path runs on the legacy default stream (stream 0), so allocations are stream-ordered
// (cudaMallocAsync from the device's default memory pool, which keeps freed memory for reuse)
// and a tensor can be freed as soon as its last owner drops it.
#include <cstddef>
#include <cstdint>

#include "model/backend.h"

namespace q2::cuda {

size_t dtype_bytes(model::DType dtype);

// A zero-filled rows x cols tensor in device memory.
model::Tensor device_tensor(int64_t rows, int64_t cols, model::DType dtype);

// Peak bytes in use from the default memory pool since the last reset (all device tensors).
size_t pool_peak_bytes();
void reset_pool_peak();

}  // namespace q2::cuda
