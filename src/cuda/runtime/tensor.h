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

// A rows x cols tensor in device memory, zero-filled unless the caller overwrites all of it.
enum class Fill { kZero, kNone };
model::Tensor device_tensor(int64_t rows, int64_t cols, model::DType dtype, Fill fill = Fill::kZero);

// Device memory the process holds: everything allocated (the pools keep freed memory reserved,
// so after a step this is that step's high-water mark) plus the CUDA context.
size_t device_bytes_in_use();
// The most bytes the pools' allocations held since trim_pool (the sum of each pool's peak: the
// buffer pool's, made once, hardly moves); device_bytes_in_use also counts the context, what
// the pools reserve beyond their allocations and memory outside them (device.h).
size_t pool_allocated_peak();
// The most bytes the pools reserved from the driver since trim_pool: their allocations' peaks
// plus what their pattern leaves unusable (freed blocks too small for the next request).
size_t pool_reserved_peak();
// Returns the pools' unused reservations to the driver and restarts both peaks, so the next
// step's marks are its own.
void trim_pool();

}  // namespace q2::cuda
