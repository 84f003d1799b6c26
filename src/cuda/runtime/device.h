#pragma once
// CUDA plumbing shared by every layer of the CUDA backend: error checks, device detection and
// an owning device allocation.
#include <cuda_runtime_api.h>

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

// An owning, move-only device allocation of n elements of T (cudaMalloc / cudaFree).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) : n_(n) {
    if (n > 0) {
      void* p = nullptr;
      check(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T)), "cudaMalloc of " + std::to_string(n * sizeof(T)) + " bytes");
      p_ = static_cast<T*>(p);
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
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  int64_t n_ = 0;
};

}  // namespace q2::cuda
