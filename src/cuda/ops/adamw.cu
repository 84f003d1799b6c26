// AdamW, bit-identical to the CPU backend's loop (model/cpu_model_backend.cpp): the same float32
// constants computed on the host the same way, and the same float32 operations in the same
// order. The _rn intrinsics are never contracted into FMAs, whatever the compiler flags.
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

struct AdamWConsts {
  float b1, b2, step, inv_bc2, keep, eps, grad_scale;
};

__global__ void adamw_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, AdamWConsts c) {
  const float one_b1 = __fsub_rn(1.0f, c.b1), one_b2 = __fsub_rn(1.0f, c.b2);
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gj = __fmul_rn(g[j], c.grad_scale);
    // m = b1 * m + (1 - b1) * g
    const float mj = __fadd_rn(__fmul_rn(c.b1, m[j]), __fmul_rn(one_b1, gj));
    // v = b2 * v + (1 - b2) * g * g
    const float vj = __fadd_rn(__fmul_rn(c.b2, v[j]), __fmul_rn(__fmul_rn(one_b2, gj), gj));
    // w = w * keep - step * m / (sqrt(v * inv_bc2) + eps)
    const float denom = __fadd_rn(__fsqrt_rn(__fmul_rn(vj, c.inv_bc2)), c.eps);
    w[j] = __fsub_rn(__fmul_rn(w[j], c.keep), __fdiv_rn(__fmul_rn(c.step, mj), denom));
    m[j] = mj;
    v[j] = vj;
  }
}

}  // namespace

void adamw(float* w, const float* g, float* m, float* v, int64_t n, const model::AdamWHyper& h, bool decay) {
  if (n <= 0) return;
  const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(h.t)),
               bc2 = 1 - std::pow(h.beta2, static_cast<double>(h.t));
  AdamWConsts c;
  c.b1 = static_cast<float>(h.beta1);
  c.b2 = static_cast<float>(h.beta2);
  c.step = static_cast<float>(h.lr / bc1);
  c.inv_bc2 = static_cast<float>(1.0 / bc2);
  c.keep = decay ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f;
  c.eps = static_cast<float>(h.eps);
  c.grad_scale = h.grad_scale;
  constexpr int kThreads = 256;
  adamw_kernel<<<detail::grid_for(n, kThreads), kThreads>>>(w, g, m, v, n, c);
  check_launch("adamw_kernel");
}

}  // namespace q2::cuda::ops
