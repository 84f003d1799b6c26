#pragma once
// Helpers shared by the op kernels (included by src/cuda/ops/*.cu only).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/error.h"
#include "cuda/ops/ops.h"
#include "cuda/runtime/device.h"

namespace q2::cuda::ops::detail {

// A stream-ordered temporary on stream 0 (the default pool keeps freed memory for reuse).
template <class T>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    if (n > 0)
      check(cudaMallocAsync(reinterpret_cast<void**>(&p_), static_cast<size_t>(n) * sizeof(T), 0),
            "cudaMallocAsync of " + std::to_string(n * static_cast<int64_t>(sizeof(T))) + " bytes");
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, 0);
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

inline void require(bool ok, const std::string& op, const std::string& problem) {
  if (!ok) throw Error(op + ": " + problem);
}

inline void require_aligned(const void* p, const std::string& op, const char* name) {
  require(reinterpret_cast<uintptr_t>(p) % 16 == 0, op, std::string(name) + " must be 16-byte aligned");
}

// Blocks of `threads` for a grid-stride loop over n items, capped (each thread then loops).
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 4096) {
  int64_t b = (n + threads - 1) / threads;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

// Records (row, id) in an IdCheck word unless one is already there.
__device__ __forceinline__ void record_bad_id(unsigned long long* word, int64_t row, uint32_t id) {
  if (word) atomicCAS(word, 0ull, (1ull << 63) | (static_cast<unsigned long long>(row) << 32) | id);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), in a fixed order; every
// thread gets the result. `shared` holds 32 values; the call ends with a barrier-free read,
// so two consecutive calls must use different `shared` arrays or a __syncthreads between.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = lane < warps ? shared[lane] : T(0);
  return warp_sum(r);
}

// *total = the float64 sum of x[0..n) by one block, in a fixed order (deterministic).
// Launch with <<<1, 1024>>>.
template <class T>
__global__ void sum_one_block_kernel(const T* __restrict__ x, int64_t n, double* __restrict__ total) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) *total = acc;
}

// V = 8: one 16-byte access of 8 BF16 values; V = 1: a scalar one.
template <int V>
__device__ __forceinline__ void load(const bf16* p, float (&v)[V]) {
  if constexpr (V == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const auto* h = reinterpret_cast<const bf16*>(&u);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __bfloat162float(h[k]);
  } else {
    v[0] = __bfloat162float(*p);
  }
}

template <int V>
__device__ __forceinline__ void store(bf16* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    uint4 u;
    auto* h = reinterpret_cast<bf16*>(&u);
#pragma unroll
    for (int k = 0; k < 8; ++k) h[k] = __float2bfloat16_rn(v[k]);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
    *p = __float2bfloat16_rn(v[0]);
  }
}

// Whether rows of `cols` elements can be accessed 8 at a time through all of `ptrs`.
inline bool vectorizable(int64_t cols, std::initializer_list<const void*> ptrs) {
  if (cols % 8) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

// Grid-stride over [begin, end) of a flat tensor in steps of V elements: op.apply<V>(i).
template <int V, class Op>
__global__ void flat_kernel(int64_t begin, int64_t end, Op op) {
  for (int64_t i = begin + (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < end;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * V)
    op.template apply<V>(i);
}

// An elementwise op over n elements: `op` (a struct of device pointers and scalars) has
// `template <int V> __device__ void apply(int64_t i) const` for elements [i, i + V). Runs V = 8
// (16-byte accesses) over the body of whole vectors and V = 1 over the tail; the body is empty
// where one of `ptrs` is not 16-byte aligned.
template <class Op>
void for_each_flat(int64_t n, std::initializer_list<const void*> ptrs, const Op& op, const char* name) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const int64_t body = vectorizable(8, ptrs) ? n / 8 * 8 : 0;
  if (body > 0) flat_kernel<8><<<grid_for(body / 8, kThreads), kThreads>>>(0, body, op);
  if (body < n) flat_kernel<1><<<grid_for(n - body, kThreads), kThreads>>>(body, n, op);
  check_launch(name);
}

}  // namespace q2::cuda::ops::detail
