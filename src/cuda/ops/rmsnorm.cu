// RMSNorm forward and backward. One warp per row (16-byte accesses when d % 8 == 0); the row
// reductions and the backward's per-element formula run in float64 like the CPU reference.
// dw: a column-parallel kernel sums fixed 64-row blocks (the CPU's blocks) into float64
// partials, and a second kernel adds them in block order: deterministic, no atomics.
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::load;
using detail::store;
using detail::vectorizable;

constexpr int kWarps = 8;
constexpr int64_t kRowsPerBlock = 64;  // as in cpu::rmsnorm_backward

template <int V>
__device__ __forceinline__ void load(const float* p, float (&v)[V]) {
  if constexpr (V == 8) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    v[0] = *p;
  }
}

template <int V>
__global__ void __launch_bounds__(kWarps * 32)
    rmsnorm_forward_kernel(const bf16* __restrict__ x, const float* __restrict__ w, int64_t rows, int64_t d, double eps,
                           bf16* __restrict__ y, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= rows) return;
  const bf16* xr = x + t * d;
  double ss = 0;
  for (int64_t c = lane * V; c < d; c += 32 * V) {
    float v[V];
    load<V>(xr + c, v);
#pragma unroll
    for (int k = 0; k < V; ++k) ss += static_cast<double>(v[k]) * v[k];
  }
  ss = detail::warp_sum(ss);
  const float r = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(d) + eps));
  if (lane == 0) rstd[t] = r;
  for (int64_t c = lane * V; c < d; c += 32 * V) {
    float v[V], wv[V];
    load<V>(xr + c, v);
    load<V>(w + c, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = v[k] * r * wv[k];
    store<V>(y + t * d + c, v);
  }
}

// dx += r * g * w - r^3 * x * mean(g * w * x), in float64 per element as on the CPU.
template <int V>
__global__ void __launch_bounds__(kWarps * 32)
    rmsnorm_dx_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x, const float* __restrict__ w,
                      const float* __restrict__ rstd, int64_t rows, int64_t d, bf16* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= rows) return;
  const bf16 *xr = x + t * d, *gr = dy + t * d;
  double dot = 0;
  for (int64_t c = lane * V; c < d; c += 32 * V) {
    float g[V], xv[V], wv[V];
    load<V>(gr + c, g);
    load<V>(xr + c, xv);
    load<V>(w + c, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) dot += static_cast<double>(g[k]) * wv[k] * xv[k];
  }
  dot = detail::warp_sum(dot);
  const double r = rstd[t], coef = r * r * r * dot / static_cast<double>(d);
  for (int64_t c = lane * V; c < d; c += 32 * V) {
    float g[V], xv[V], wv[V], o[V];
    load<V>(gr + c, g);
    load<V>(xr + c, xv);
    load<V>(w + c, wv);
    load<V>(dx + t * d + c, o);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] += static_cast<float>(r * g[k] * wv[k] - coef * xv[k]);
    store<V>(dx + t * d + c, o);
  }
}

// partial[blk][c] = sum over the rows of 64-row block blk of g * x * r (float64).
__global__ void rmsnorm_dw_partial_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                          const float* __restrict__ rstd, int64_t rows, int64_t d,
                                          double* __restrict__ partial) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  const int64_t t0 = blockIdx.y * kRowsPerBlock, t1 = t0 + kRowsPerBlock < rows ? t0 + kRowsPerBlock : rows;
  double acc = 0;
  for (int64_t t = t0; t < t1; ++t)
    acc += static_cast<double>(__bfloat162float(dy[t * d + c])) * __bfloat162float(x[t * d + c]) *
           static_cast<double>(rstd[t]);
  partial[blockIdx.y * d + c] = acc;
}

__global__ void rmsnorm_dw_sum_kernel(const double* __restrict__ partial, int64_t blocks, int64_t d,
                                      float* __restrict__ dw) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  double sum = 0;
  for (int64_t b = 0; b < blocks; ++b) sum += partial[b * d + c];
  dw[c] += static_cast<float>(sum);
}

}  // namespace

void rmsnorm_forward(const bf16* x, const float* w, int64_t rows, int64_t d, double eps, bf16* y, float* rstd) {
  if (rows <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  if (vectorizable(d, {x, w, y}))
    rmsnorm_forward_kernel<8><<<blocks, kWarps * 32>>>(x, w, rows, d, eps, y, rstd);
  else
    rmsnorm_forward_kernel<1><<<blocks, kWarps * 32>>>(x, w, rows, d, eps, y, rstd);
  check_launch("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const bf16* dy, const bf16* x, const float* w, const float* rstd, int64_t rows, int64_t d,
                      bf16* dx, float* dw) {
  if (rows <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  if (vectorizable(d, {dy, x, w, dx}))
    rmsnorm_dx_kernel<8><<<blocks, kWarps * 32>>>(dy, x, w, rstd, rows, d, dx);
  else
    rmsnorm_dx_kernel<1><<<blocks, kWarps * 32>>>(dy, x, w, rstd, rows, d, dx);
  check_launch("rmsnorm_dx_kernel");

  const int64_t row_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  detail::require(row_blocks < 65536, "rmsnorm_backward", "too many rows");
  constexpr int kThreads = 128;
  const unsigned col_blocks = static_cast<unsigned>((d + kThreads - 1) / kThreads);
  detail::Scratch<double> partial(row_blocks * d);
  rmsnorm_dw_partial_kernel<<<dim3(col_blocks, static_cast<unsigned>(row_blocks)), kThreads>>>(dy, x, rstd, rows, d,
                                                                                               partial.get());
  check_launch("rmsnorm_dw_partial_kernel");
  rmsnorm_dw_sum_kernel<<<col_blocks, kThreads>>>(partial.get(), row_blocks, d, dw);
  check_launch("rmsnorm_dw_sum_kernel");
}

}  // namespace q2::cuda::ops
