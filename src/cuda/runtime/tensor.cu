#include "cuda/runtime/tensor.h"

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "common/error.h"
#include "cuda/runtime/device.h"

namespace q2::cuda {

size_t dtype_bytes(model::DType dtype) { return dtype == model::DType::kBF16 ? 2 : 4; }

model::Tensor device_tensor(int64_t rows, int64_t cols, model::DType dtype, Fill fill) {
  if (rows < 0 || cols < 0)
    throw Error("device tensor of negative shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  memory_pool();
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

namespace {

// The sum of both pools' high-water marks of `a`.
size_t pools_high(cudaMemPoolAttr a) {
  uint64_t sum = 0;
  for (const cudaMemPool_t p : {memory_pool(), buffer_pool()}) {
    uint64_t high = 0;
    check(cudaMemPoolGetAttribute(p, a, &high), "cudaMemPoolGetAttribute");
    sum += high;
  }
  return static_cast<size_t>(sum);
}

}  // namespace

size_t pool_allocated_peak() { return pools_high(cudaMemPoolAttrUsedMemHigh); }

size_t pool_reserved_peak() { return pools_high(cudaMemPoolAttrReservedMemHigh); }

void trim_pool() {
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  for (const cudaMemPool_t p : {memory_pool(), buffer_pool()}) {
    check(cudaMemPoolTrimTo(p, 0), "cudaMemPoolTrimTo");
    for (const cudaMemPoolAttr a : {cudaMemPoolAttrUsedMemHigh, cudaMemPoolAttrReservedMemHigh}) {
      uint64_t zero = 0;  // the only value a high-water mark can be reset to
      check(cudaMemPoolSetAttribute(p, a, &zero), "cudaMemPoolSetAttribute");
    }
  }
}

}  // namespace q2::cuda
