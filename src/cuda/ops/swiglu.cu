// SwiGLU forward and backward, float32 math as in cpu::swiglu_*: sigmoid(a) = 1 / (1 + exp(-a)).
// Each thread handles 8 consecutive columns (16-byte accesses) when hidden % 8 == 0, else one.
#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::load;
using detail::store;
using detail::vectorizable;

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

template <int V>
__global__ void swiglu_forward_kernel(const bf16* __restrict__ h12, int64_t rows, int64_t hidden,
                                      bf16* __restrict__ g) {
  const int64_t per_row = hidden / V, n = rows * per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_row, c = (i - t * per_row) * V;
    float a[V], b[V], o[V];
    load<V>(h12 + t * 2 * hidden + c, a);
    load<V>(h12 + t * 2 * hidden + hidden + c, b);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = a[k] * sigmoid(a[k]) * b[k];
    store<V>(g + t * hidden + c, o);
  }
}

template <int V>
__global__ void swiglu_backward_kernel(const bf16* __restrict__ dg, const bf16* __restrict__ h12, int64_t rows,
                                       int64_t hidden, bf16* __restrict__ dh12) {
  const int64_t per_row = hidden / V, n = rows * per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_row, c = (i - t * per_row) * V;
    float a[V], b[V], g[V], da[V], db[V];
    load<V>(h12 + t * 2 * hidden + c, a);
    load<V>(h12 + t * 2 * hidden + hidden + c, b);
    load<V>(dg + t * hidden + c, g);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float s = sigmoid(a[k]), silu = a[k] * s;
      da[k] = g[k] * b[k] * (s + silu * (1.0f - s));
      db[k] = g[k] * silu;
    }
    store<V>(dh12 + t * 2 * hidden + c, da);
    store<V>(dh12 + t * 2 * hidden + hidden + c, db);
  }
}

constexpr int kThreads = 256;

}  // namespace

void swiglu_forward(const bf16* h12, int64_t rows, int64_t hidden, bf16* g) {
  if (rows <= 0 || hidden <= 0) return;
  if (vectorizable(hidden, {h12, g}))
    swiglu_forward_kernel<8><<<detail::grid_for(rows * hidden / 8, kThreads), kThreads>>>(h12, rows, hidden, g);
  else
    swiglu_forward_kernel<1><<<detail::grid_for(rows * hidden, kThreads), kThreads>>>(h12, rows, hidden, g);
  check_launch("swiglu_forward_kernel");
}

void swiglu_backward(const bf16* dg, const bf16* h12, int64_t rows, int64_t hidden, bf16* dh12) {
  if (rows <= 0 || hidden <= 0) return;
  if (vectorizable(hidden, {dg, h12, dh12}))
    swiglu_backward_kernel<8><<<detail::grid_for(rows * hidden / 8, kThreads), kThreads>>>(dg, h12, rows, hidden, dh12);
  else
    swiglu_backward_kernel<1><<<detail::grid_for(rows * hidden, kThreads), kThreads>>>(dg, h12, rows, hidden, dh12);
  check_launch("swiglu_backward_kernel");
}

}  // namespace q2::cuda::ops
