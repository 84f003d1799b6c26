// RMSNorm forward and backward (cpu::rmsnorm_*), with or without a gain, and the per-head norm
// without a gain of QK norm (cpu::head_rmsnorm_*). One warp per row, or per (row, head)
// (16-byte accesses when the width is a multiple of 8); the reductions and the backward's
// per-element formula run in float64 like the CPU reference. The gain is a template flag: the
// gainless norm reads no weights and the gain path is unchanged.
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

// One warp's norm of a row (or head) of n elements: y = bf16(x * r * w), or bf16(x * r) without
// a gain (w not read), r = float(1 / sqrt(mean(x^2) + eps)) returned. y may be x (in place): each
// lane reads its elements before the warp's sum and then rewrites only those.
template <int V, bool Gain>
__device__ __forceinline__ float norm_row(const bf16* x, const float* w, int64_t n, double eps, bf16* y, int lane) {
  double ss = 0;
  for (int64_t c = lane * V; c < n; c += 32 * V) {
    float v[V];
    load<V>(x + c, v);
#pragma unroll
    for (int k = 0; k < V; ++k) ss += static_cast<double>(v[k]) * v[k];
  }
  ss = detail::warp_sum(ss);
  const float r = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t c = lane * V; c < n; c += 32 * V) {
    float v[V];
    load<V>(x + c, v);
    if constexpr (Gain) {
      float wv[V];
      load<V>(w + c, wv);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = v[k] * r * wv[k];
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = v[k] * r;
    }
    store<V>(y + c, v);
  }
  return r;
}

template <int V, bool Gain>
__global__ void __launch_bounds__(kWarps * 32)
    rmsnorm_forward_kernel(const bf16* __restrict__ x, const float* __restrict__ w, int64_t rows, int64_t d, double eps,
                           bf16* __restrict__ y, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= rows) return;
  const float r = norm_row<V, Gain>(x + t * d, w, d, eps, y + t * d, lane);
  if (lane == 0) rstd[t] = r;
}

// dx += r * g * w - r^3 * x * mean(g * w * x), in float64 per element as on the CPU; w = 1
// (not read) without a gain.
template <int V, bool Gain>
__device__ __forceinline__ void load_gain(const float* w, int64_t c, float (&wv)[V]) {
  if constexpr (Gain) {
    load<V>(w + c, wv);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) wv[k] = 1.0f;
  }
}

template <int V, bool Gain>
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
    load_gain<V, Gain>(w, c, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) dot += static_cast<double>(g[k]) * wv[k] * xv[k];
  }
  dot = detail::warp_sum(dot);
  const double r = rstd[t], coef = r * r * r * dot / static_cast<double>(d);
  for (int64_t c = lane * V; c < d; c += 32 * V) {
    float g[V], xv[V], wv[V], o[V];
    load<V>(gr + c, g);
    load<V>(xr + c, xv);
    load_gain<V, Gain>(w, c, wv);
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

// QK norm: one warp per (row t, head h), p = t * n_heads + h (rstd's index), in place.
template <int V>
__global__ void __launch_bounds__(kWarps * 32)
    head_rmsnorm_forward_kernel(bf16* x, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim,
                                double eps, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (p >= rows * n_heads) return;
  const int64_t t = p / n_heads, h = p - t * n_heads;
  bf16* xr = x + t * ld + col0 + h * head_dim;
  const float r = norm_row<V, false>(xr, nullptr, head_dim, eps, xr, lane);
  if (lane == 0) rstd[p] = r;
}

// In place on dy: g <- r * (g - y * mean(g * y)) per head, in float64 as on the CPU.
template <int V>
__global__ void __launch_bounds__(kWarps * 32)
    head_rmsnorm_backward_kernel(bf16* __restrict__ dy, const bf16* __restrict__ y, int64_t rows, int64_t ld,
                                 int64_t col0, int64_t n_heads, int64_t head_dim, const float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (p >= rows * n_heads) return;
  const int64_t t = p / n_heads, h = p - t * n_heads, off = t * ld + col0 + h * head_dim;
  bf16* gr = dy + off;
  const bf16* yr = y + off;
  double dot = 0;
  for (int64_t c = lane * V; c < head_dim; c += 32 * V) {
    float g[V], o[V];
    load<V>(gr + c, g);
    load<V>(yr + c, o);
#pragma unroll
    for (int k = 0; k < V; ++k) dot += static_cast<double>(g[k]) * o[k];
  }
  dot = detail::warp_sum(dot);
  const double r = rstd[p], mean = dot / static_cast<double>(head_dim);
  for (int64_t c = lane * V; c < head_dim; c += 32 * V) {
    float g[V], o[V];
    load<V>(gr + c, g);
    load<V>(yr + c, o);
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] = static_cast<float>(r * (g[k] - o[k] * mean));
    store<V>(gr + c, g);
  }
}

}  // namespace

void rmsnorm_forward(const bf16* x, const float* w, int64_t rows, int64_t d, double eps, bf16* y, float* rstd) {
  if (rows <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  const bool v8 = vectorizable(d, {x, w, y});
  auto* kernel = w ? (v8 ? rmsnorm_forward_kernel<8, true> : rmsnorm_forward_kernel<1, true>)
                   : (v8 ? rmsnorm_forward_kernel<8, false> : rmsnorm_forward_kernel<1, false>);
  kernel<<<blocks, kWarps * 32>>>(x, w, rows, d, eps, y, rstd);
  check_launch("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const bf16* dy, const bf16* x, const float* w, const float* rstd, int64_t rows, int64_t d,
                      bf16* dx, float* dw) {
  detail::require(!w == !dw, "rmsnorm_backward", "a gain and its gradient go together");
  if (rows <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  const bool v8 = vectorizable(d, {dy, x, w, dx});
  auto* kernel = w ? (v8 ? rmsnorm_dx_kernel<8, true> : rmsnorm_dx_kernel<1, true>)
                   : (v8 ? rmsnorm_dx_kernel<8, false> : rmsnorm_dx_kernel<1, false>);
  kernel<<<blocks, kWarps * 32>>>(dy, x, w, rstd, rows, d, dx);
  check_launch("rmsnorm_dx_kernel");
  if (!dw) return;

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

namespace {

void check_heads(int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim, const char* op) {
  detail::require(head_dim > 0 && n_heads > 0 && col0 >= 0 && col0 + n_heads * head_dim <= ld, op,
                  "the heads do not fit the columns");
}

bool heads_vectorizable(const void* p, const void* q, int64_t ld, int64_t col0, int64_t head_dim) {
  return ld % 8 == 0 && col0 % 8 == 0 && vectorizable(head_dim, {p, q});
}

unsigned head_blocks(int64_t rows, int64_t n_heads) {
  const int64_t b = (rows * n_heads + kWarps - 1) / kWarps;
  detail::require(b <= INT32_MAX, "head_rmsnorm", "too many rows");
  return static_cast<unsigned>(b);
}

}  // namespace

void head_rmsnorm_forward(bf16* x, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim,
                          double eps, float* rstd) {
  check_heads(ld, col0, n_heads, head_dim, "head_rmsnorm_forward");
  if (rows <= 0) return;
  auto* kernel = heads_vectorizable(x, x, ld, col0, head_dim) ? head_rmsnorm_forward_kernel<8>
                                                               : head_rmsnorm_forward_kernel<1>;
  kernel<<<head_blocks(rows, n_heads), kWarps * 32>>>(x, rows, ld, col0, n_heads, head_dim, eps, rstd);
  check_launch("head_rmsnorm_forward_kernel");
}

void head_rmsnorm_backward(bf16* dy, const bf16* y, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads,
                           int64_t head_dim, const float* rstd) {
  check_heads(ld, col0, n_heads, head_dim, "head_rmsnorm_backward");
  if (rows <= 0) return;
  auto* kernel = heads_vectorizable(dy, y, ld, col0, head_dim) ? head_rmsnorm_backward_kernel<8>
                                                                : head_rmsnorm_backward_kernel<1>;
  kernel<<<head_blocks(rows, n_heads), kWarps * 32>>>(dy, y, rows, ld, col0, n_heads, head_dim, rstd);
  check_launch("head_rmsnorm_backward_kernel");
}

}  // namespace q2::cuda::ops
