// nanochat's resid / x0 lambdas: y = a[i] x + b[i] x0 and its backward, cpu::residual_mix_*'s
// float32 operations in its order (no FMA contraction in this build), each BF16 result rounded
// once. The layer's scalars are read on the device from the float32 parameter vectors.
// Forward: elementwise over the flat tensor (detail::for_each_flat). Backward: one warp per row
// updates dL/dx and dx0 and writes the row's float64 sums of dL/dy * x and dL/dy * x0; one block
// adds the rows in a fixed order into da[i] and db[i] (deterministic, no atomics).
#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::load;
using detail::store;

constexpr int kWarps = 8;

// y = a[layer] x + b[layer] x0.
struct MixForward {
  const bf16 *x, *x0;
  const float *a, *b;
  int64_t layer;
  bf16* y;
  template <int V>
  __device__ void apply(int64_t i) const {
    const float al = a[layer], bl = b[layer];
    float u[V], v[V];
    load<V>(x + i, u);
    load<V>(x0 + i, v);
#pragma unroll
    for (int k = 0; k < V; ++k) u[k] = al * u[k] + bl * v[k];
    store<V>(y + i, u);
  }
};

// partial[t] = sum_c g x, partial[rows + t] = sum_c g x0 over row t (float64), g = dL/dy.
template <int V>
__global__ void __launch_bounds__(kWarps * 32)
    residual_mix_backward_kernel(bf16* __restrict__ dxy, const bf16* __restrict__ x, const bf16* __restrict__ x0,
                                 const float* __restrict__ a, const float* __restrict__ b, int64_t layer,
                                 int64_t rows, int64_t d, bf16* __restrict__ dx0, double* __restrict__ partial) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= rows) return;
  const float al = a[layer], bl = b[layer];
  double sa = 0, sb = 0;
  for (int64_t c = t * d + lane * V; c < (t + 1) * d; c += 32 * V) {
    float g[V], xv[V], x0v[V], o[V];
    load<V>(dxy + c, g);
    load<V>(x + c, xv);
    load<V>(x0 + c, x0v);
    load<V>(dx0 + c, o);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      sa += static_cast<double>(g[k]) * xv[k];
      sb += static_cast<double>(g[k]) * x0v[k];
      o[k] += bl * g[k];
      g[k] *= al;
    }
    store<V>(dx0 + c, o);
    store<V>(dxy + c, g);
  }
  sa = detail::warp_sum(sa);
  sb = detail::warp_sum(sb);
  if (lane == 0) partial[t] = sa, partial[rows + t] = sb;
}

// da[layer] += float(sum of partial[0, rows)), db[layer] += float(sum of partial[rows, 2 rows)).
// Launch with <<<1, 1024>>>.
__global__ void residual_mix_lambda_grad_kernel(const double* __restrict__ partial, int64_t rows, int64_t layer,
                                                float* __restrict__ da, float* __restrict__ db) {
  __shared__ double shared_a[32], shared_b[32];
  double sa = 0, sb = 0;
  for (int64_t t = threadIdx.x; t < rows; t += blockDim.x) sa += partial[t], sb += partial[rows + t];
  sa = detail::block_sum(sa, shared_a);
  sb = detail::block_sum(sb, shared_b);
  if (threadIdx.x == 0) {
    da[layer] += static_cast<float>(sa);
    db[layer] += static_cast<float>(sb);
  }
}

}  // namespace

void residual_mix_forward(const bf16* x, const bf16* x0, const float* a, const float* b, int64_t i, int64_t rows,
                          int64_t d, bf16* y) {
  detail::require(i >= 0, "residual_mix_forward", "negative layer index");
  detail::for_each_flat(rows * d, {x, x0, y}, MixForward{x, x0, a, b, i, y}, "residual_mix_forward");
}

void residual_mix_backward(bf16* dxy, const bf16* x, const bf16* x0, const float* a, const float* b, int64_t i,
                           int64_t rows, int64_t d, bf16* dx0, float* da, float* db) {
  detail::require(i >= 0, "residual_mix_backward", "negative layer index");
  if (rows <= 0 || d <= 0) return;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  detail::require(blocks <= INT32_MAX, "residual_mix_backward", "too many rows");
  detail::Scratch<double> partial(2 * rows);
  auto* kernel = detail::vectorizable(d, {dxy, x, x0, dx0}) ? residual_mix_backward_kernel<8>
                                                             : residual_mix_backward_kernel<1>;
  kernel<<<static_cast<unsigned>(blocks), kWarps * 32>>>(dxy, x, x0, a, b, i, rows, d, dx0, partial.get());
  check_launch("residual_mix_backward_kernel");
  residual_mix_lambda_grad_kernel<<<1, 1024>>>(partial.get(), rows, i, da, db);
  check_launch("residual_mix_lambda_grad_kernel");
}

}  // namespace q2::cuda::ops
