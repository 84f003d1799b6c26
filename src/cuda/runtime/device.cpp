#include "cuda/runtime/device.h"

#include <cstdint>
#include <map>
#include <mutex>

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

// The pools of the current device, set up on its first use: a process may drive several GPUs
// (the C API works on whichever is current).
struct Pools {
  cudaMemPool_t steps = nullptr, buffers = nullptr;
};

const Pools& pools() {
  static std::mutex mu;
  static std::map<int, Pools> by_device;
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mu);
  Pools& p = by_device[device];
  if (!p.steps) {
    cudaMemPool_t steps, buffers;
    check(cudaDeviceGetDefaultMemPool(&steps, device), "cudaDeviceGetDefaultMemPool");
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    check(cudaMemPoolCreate(&buffers, &props), "cudaMemPoolCreate (buffers)");
    p.buffers = keeping_freed_memory(buffers);
    p.steps = keeping_freed_memory(steps);
  }
  return p;
}

}  // namespace

cudaMemPool_t memory_pool() { return pools().steps; }

cudaMemPool_t buffer_pool() { return pools().buffers; }

void* device_alloc(size_t bytes, const std::string& what) {
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
