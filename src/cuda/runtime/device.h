#pragma once
// CUDA plumbing shared by every layer of the CUDA backend: error checks, device detection and
// an owning device allocation.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace q2::cuda {

// Throws q2::Error("CUDA error in <what>: <message>") unless e == cudaSuccess.
void check(cudaError_t e, const std::string& what);
// After a kernel launch: checks cudaGetLastError, naming the kernel.
void check_launch(const char* kernel);
// True when at least one CUDA device is usable (never throws).
bool device_available();

// Two stream-ordered pools per device (the current device's are returned, both set up on its
// first use), each told to keep freed memory (the default threshold of 0 would return it to the
// driver at every synchronization, making each step pay for fresh allocations):
// - memory_pool(), the device's default pool: a step's tensors (tensor.h's device_tensor, the
//   ops' temporaries), made and freed in the same order every step;
// - buffer_pool(): buffers that outlive a step (device_alloc: DeviceBuffer, the layers' kept
//   operands and grow-only scratch), most made during the first step. Among the step's tensors
//   they can leave that step's freed blocks where the next step's requests, which no longer
//   make them, do not fit, so that the pool grows.
cudaMemPool_t memory_pool();
cudaMemPool_t buffer_pool();
// `bytes` from buffer_pool(), usable on any stream on return; and back, after the device's
// queued work (the guarantee cudaFree gives).
void* device_alloc(size_t bytes, const std::string& what);
void device_free(void* p);

// An owning, move-only device allocation of n elements of T (device_alloc / device_free).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) : n_(n) {
    if (n > 0) {
      p_ = static_cast<T*>(device_alloc(static_cast<size_t>(n) * sizeof(T), "DeviceBuffer"));
    }
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  T* get() { return p_; }
  const T* get() const { return p_; }
  int64_t size() const { return n_; }
  size_t bytes() const { return static_cast<size_t>(n_) * sizeof(T); }

 private:
  void release() {
    if (p_) device_free(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  int64_t n_ = 0;
};

}  // namespace q2::cuda
