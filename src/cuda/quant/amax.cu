// 1. Absolute maximum of a BF16 tensor with NaN/Inf detection (quant/checks.cpp: checked_amax),
// or of a float32 tensor's BF16 copy (rounded on load, as ops::convert rounds).
//
// Design: a persistent grid-stride loop; each thread reads 4 x 8 elements per iteration (4
// independent loads in flight) and keeps the running maximum of |x| as BF16 bit patterns in
// the two 16-bit halves of one register (__vmaxu2 on the sign-cleared words): for
// non-negative values the bit order is the value order, and NaN/Inf sort above every finite
// value, so the maximum is exact (order-free) and also tells whether a NaN or Inf was seen.
// CUB block reduction, then one atomicMax per block on the float bits.
#include <cub/block/block_reduce.cuh>

#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kAmaxThreads = 256;

// T: BF16, or float32 read as its BF16 copy (load8).
template <class T>
__global__ void __launch_bounds__(kAmaxThreads) amax_kernel(const T* __restrict__ x, int64_t n8, FlagSet flags) {
  dependent_launch_prologue();
  clear_spare(flags.spare);
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kAmaxThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kAmaxThreads + threadIdx.x;
  for (; i + 3 * stride < n8; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = load8<true>(x, i + k * stride);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      acc = __vmaxu2(acc, v[k].x & 0x7FFF7FFFu);
      acc = __vmaxu2(acc, v[k].y & 0x7FFF7FFFu);
      acc = __vmaxu2(acc, v[k].z & 0x7FFF7FFFu);
      acc = __vmaxu2(acc, v[k].w & 0x7FFF7FFFu);
    }
  }
  for (; i < n8; i += stride) {
    const uint4 v = load8<true>(x, i);
    acc = __vmaxu2(acc, v.x & 0x7FFF7FFFu);
    acc = __vmaxu2(acc, v.y & 0x7FFF7FFFu);
    acc = __vmaxu2(acc, v.z & 0x7FFF7FFFu);
    acc = __vmaxu2(acc, v.w & 0x7FFF7FFFu);
  }
  uint32_t m = max(acc & 0xFFFFu, acc >> 16);  // BF16 bits of max |x|
  using Reduce = cub::BlockReduce<uint32_t, kAmaxThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  m = Reduce(tmp).Reduce(m, [](uint32_t a, uint32_t b) { return a < b ? b : a; });
  if (threadIdx.x == 0) {
    if (m >= 0x7F80u)
      flags.use->nonfinite = 1u;
    else if (m != 0u)
      atomicMax(&flags.use->amax_bits, m << 16);
  }
}

template <class View>
void launch_amax(const View& x, Workspace& ws, cudaStream_t stream) {
  require(x.rows > 0 && x.cols > 0, x.name, "is empty");
  require(x.cols % kBlock == 0, x.name, "row length " + std::to_string(x.cols) + " is not a multiple of 16");
  require(reinterpret_cast<uintptr_t>(x.data) % 16 == 0, x.name, "device pointer is not 16-byte aligned");
  const int64_t n8 = x.rows * x.cols / 8;
  const auto kernel = amax_kernel<element_t<View>>;
  const int blocks =
      persistent_blocks(reinterpret_cast<const void*>(kernel), kAmaxThreads, 0, (n8 + kAmaxThreads - 1) / kAmaxThreads);
  launch_dependent("amax_kernel", kernel, blocks, kAmaxThreads, stream, x.data, n8, next_flags(ws));
  ws.next_turn();
}

}  // namespace
}  // namespace detail

void amax_async(const BF16View& x, Workspace& ws, cudaStream_t stream) { detail::launch_amax(x, ws, stream); }

void amax_async(const F32View& x, Workspace& ws, cudaStream_t stream) { detail::launch_amax(x, ws, stream); }

float amax(const BF16View& x, Workspace& ws, cudaStream_t stream) {
  amax_async(x, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
  float a = 0.0f;
  check(cudaMemcpy(&a, ws.amax(), sizeof a, cudaMemcpyDeviceToHost), "reading amax");
  return a;
}

}  // namespace q2::cuda
