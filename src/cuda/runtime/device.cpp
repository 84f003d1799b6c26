#include "cuda/runtime/device.h"

#include <cstdint>

#include "common/error.h"

namespace q2::cuda {

void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("CUDA error in " + what + ": " + cudaGetErrorString(e));
}

void check_launch(const char* kernel) { check(cudaGetLastError(), std::string("launch of ") + kernel); }

namespace {

cudaMemPool_t keeping_freed_memory(cudaMemPool_t p) {
  uint64_t keep = UINT64_MAX;
  check(cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  return p;
}

int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

}  // namespace

cudaMemPool_t memory_pool() {
  static const cudaMemPool_t pool = [] {
    cudaMemPool_t p;
    check(cudaDeviceGetDefaultMemPool(&p, current_device()), "cudaDeviceGetDefaultMemPool");
    return keeping_freed_memory(p);
  }();
  return pool;
}

cudaMemPool_t buffer_pool() {
  static const cudaMemPool_t pool = [] {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = current_device();
    cudaMemPool_t p;
    check(cudaMemPoolCreate(&p, &props), "cudaMemPoolCreate (buffers)");
    return keeping_freed_memory(p);
  }();
  return pool;
}

void* device_alloc(size_t bytes, const std::string& what) {
  memory_pool();  // the step's pool keeps its memory from the first buffer on, as device_tensor's first call does
  void* p = nullptr;
  check(cudaMallocFromPoolAsync(&p, bytes, buffer_pool(), 0),
        "cudaMallocFromPoolAsync of " + std::to_string(bytes) + " bytes (" + what + ")");
  check(cudaStreamSynchronize(0), "cudaStreamSynchronize (new buffer)");
  return p;
}

void device_free(void* p) {
  // Errors are ignored: this runs in destructors, also after a failed step or at exit.
  cudaDeviceSynchronize();
  cudaFreeAsync(p, 0);
}

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls start clean
    return false;
  }
  return n > 0;
}

}  // namespace q2::cuda
