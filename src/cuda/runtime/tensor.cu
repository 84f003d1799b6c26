#include "cuda/runtime/tensor.h"

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "common/error.h"
#include "cuda/runtime/device.h"

namespace q2::cuda {

namespace {

// The default pool, told once to keep freed memory (the default threshold of 0 would return it
// to the driver at every synchronization, making each step pay for fresh allocations).
cudaMemPool_t default_pool() {
  static const cudaMemPool_t pool = [] {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    cudaMemPool_t p;
    check(cudaDeviceGetDefaultMemPool(&p, device), "cudaDeviceGetDefaultMemPool");
    uint64_t keep = UINT64_MAX;
    check(cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
    return p;
  }();
  return pool;
}

}  // namespace

size_t dtype_bytes(model::DType dtype) { return dtype == model::DType::kBF16 ? 2 : 4; }

model::Tensor device_tensor(int64_t rows, int64_t cols, model::DType dtype, Fill fill) {
  if (rows < 0 || cols < 0)
    throw Error("device tensor of negative shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  default_pool();
  model::Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.dtype = dtype;
  const size_t bytes = static_cast<size_t>(rows * cols) * dtype_bytes(dtype);
  if (bytes == 0) return t;
  void* p = nullptr;
  check(cudaMallocAsync(&p, bytes, 0), "cudaMallocAsync of " + std::to_string(bytes) + " bytes");
  if (fill == Fill::kZero) check(cudaMemsetAsync(p, 0, bytes, 0), "cudaMemsetAsync");
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [](void* q) { cudaFreeAsync(q, 0); });
  return t;
}

size_t device_bytes_in_use() {
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return total - free;
}

void trim_pool() {
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  check(cudaMemPoolTrimTo(default_pool(), 0), "cudaMemPoolTrimTo");
}

}  // namespace q2::cuda
