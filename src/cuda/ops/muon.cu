// Muon's elementwise and reduction steps (model/muon.h); the orthogonalization's GEMMs are
// cuBLASLt's (cuda/muon.cpp). The momentum is bit-identical to the CPU backend's
// (model/cpu_muon.cpp): the same float32 constants computed on the host the same way, the
// same float32 operations in the same order (the _rn intrinsics are never contracted into FMAs).
#include <cmath>

#include "cuda/ops/common.cuh"
#include "model/muon.h"

namespace q2::cuda::ops {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t tid() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t nthreads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void momentum_kernel(const float* __restrict__ g, float* __restrict__ m, float* __restrict__ u, int64_t n,
                                float mu, float one_mu, float grad_scale) {
  for (int64_t j = tid(); j < n; j += nthreads()) {
    const float gj = __fmul_rn(g[j], grad_scale);
    // m = m + (1 - mu) (g - m); u = g + mu (m - g)
    const float mj = __fadd_rn(m[j], __fmul_rn(one_mu, __fsub_rn(gj, m[j])));
    m[j] = mj;
    u[j] = __fadd_rn(gj, __fmul_rn(mu, __fsub_rn(mj, gj)));
  }
}

__global__ void normalize_kernel(const float* __restrict__ u, const double* __restrict__ sum_sq, double scale,
                                 double eps, bf16* __restrict__ x, int64_t n) {
  const float k = static_cast<float>(1.0 / (scale * sqrt(*sum_sq) + eps));
  for (int64_t j = tid(); j < n; j += nthreads()) x[j] = __float2bfloat16_rn(__fmul_rn(u[j], k));
}

__global__ void scaled_copy_kernel(const bf16* __restrict__ src, float s, float* __restrict__ dst, int64_t n) {
  for (int64_t j = tid(); j < n; j += nthreads())
    dst[j] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(s, __bfloat162float(src[j]))));
}

// r[i] = mean of x^2 along row i (one block per row).
__global__ void row_mean_squares_kernel(const bf16* __restrict__ x, int64_t cols, float* __restrict__ r) {
  __shared__ double shared[32];
  const bf16* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  double acc = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const double e = __bfloat162float(row[j]);
    acc += e * e;
  }
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) r[blockIdx.x] = static_cast<float>(acc / static_cast<double>(cols));
}

// r[j] = mean of x^2 down column j (one thread per column, rows in order).
__global__ void col_mean_squares_kernel(const bf16* __restrict__ x, int64_t rows, int64_t cols, float* __restrict__ r) {
  for (int64_t j = tid(); j < cols; j += nthreads()) {
    double acc = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const double e = __bfloat162float(x[i * cols + j]);
      acc += e * e;
    }
    r[j] = static_cast<float>(acc / static_cast<double>(rows));
  }
}

// One block: V <- V + (1 - beta2) (r - V); f = d * (norm before / norm after), d = 1 / sqrt(V).
__global__ void second_moment_kernel(const float* __restrict__ r, float* __restrict__ v, float* __restrict__ f,
                                     int64_t k, int64_t len, float one_b2) {
  __shared__ double shared_a[32], shared_b[32];
  __shared__ float keep;
  double norm_sq = 0, new_sq = 0;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float vi = __fadd_rn(v[i], __fmul_rn(one_b2, __fsub_rn(r[i], v[i])));
    v[i] = vi;
    const float di = __frcp_rn(__fsqrt_rn(fmaxf(vi, static_cast<float>(model::kMuonVarianceFloor))));
    f[i] = di;
    norm_sq += static_cast<double>(r[i]) * len;
    new_sq += static_cast<double>(r[i]) * len * di * di;
  }
  norm_sq = detail::block_sum(norm_sq, shared_a);
  new_sq = detail::block_sum(new_sq, shared_b);
  if (threadIdx.x == 0) keep = static_cast<float>(sqrt(norm_sq) / fmax(sqrt(new_sq), model::kMuonVarianceFloor));
  __syncthreads();
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) f[i] = __fmul_rn(f[i], keep);
}

__global__ void update_kernel(float* __restrict__ w, const bf16* __restrict__ x, const float* __restrict__ f,
                              int64_t rows, int64_t cols, bool per_row, float step, float decay) {
  const int64_t n = rows * cols;
  for (int64_t e = tid(); e < n; e += nthreads()) {
    const float u = __fmul_rn(__bfloat162float(x[e]), f[per_row ? e / cols : e % cols]);
    const float we = w[e];
    const float wd = __fmul_rn(u, we) >= 0.0f ? __fmul_rn(decay, we) : 0.0f;
    w[e] = __fsub_rn(we, __fadd_rn(__fmul_rn(step, u), wd));
  }
}

}  // namespace

void muon_momentum(const float* g, float* m, float* u, int64_t n, double momentum, float grad_scale) {
  if (n <= 0) return;
  momentum_kernel<<<detail::grid_for(n, kThreads), kThreads>>>(g, m, u, n, static_cast<float>(momentum),
                                                              static_cast<float>(1.0 - momentum), grad_scale);
  check_launch("muon momentum_kernel");
}

void muon_normalize(const float* u, const double* sum_sq, double scale, double eps, bf16* x, int64_t n) {
  if (n <= 0) return;
  normalize_kernel<<<detail::grid_for(n, kThreads), kThreads>>>(u, sum_sq, scale, eps, x, n);
  check_launch("muon normalize_kernel");
}

void scaled_copy(const bf16* src, float s, float* dst, int64_t n) {
  if (n <= 0) return;
  scaled_copy_kernel<<<detail::grid_for(n, kThreads), kThreads>>>(src, s, dst, n);
  check_launch("scaled_copy_kernel");
}

void muon_variance(const bf16* x, int64_t rows, int64_t cols, float* v, double beta2, float* f) {
  if (rows <= 0 || cols <= 0) return;
  const bool per_row = model::muon_per_row(rows, cols);
  const int64_t k = per_row ? rows : cols, len = per_row ? cols : rows;
  detail::Scratch<float> r(k);
  if (per_row) {
    row_mean_squares_kernel<<<static_cast<unsigned>(rows), kThreads>>>(x, cols, r.get());
  } else {
    col_mean_squares_kernel<<<detail::grid_for(cols, kThreads), kThreads>>>(x, rows, cols, r.get());
  }
  check_launch("muon mean squares");
  second_moment_kernel<<<1, 1024>>>(r.get(), v, f, k, len, static_cast<float>(1.0 - beta2));
  check_launch("muon second_moment_kernel");
}

void muon_update(float* w, const bf16* x, const float* f, int64_t rows, int64_t cols, double lr, double weight_decay) {
  if (rows <= 0 || cols <= 0) return;
  update_kernel<<<detail::grid_for(rows * cols, kThreads), kThreads>>>(
      w, x, f, rows, cols, model::muon_per_row(rows, cols), static_cast<float>(lr), static_cast<float>(lr * weight_decay));
  check_launch("muon update_kernel");
}

}  // namespace q2::cuda::ops
