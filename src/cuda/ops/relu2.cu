// ReLU^2, nanochat's MLP activation, forward and backward: cpu::relu2_*'s float32 operations in
// its order (no FMA contraction in this build), rounded once to BF16; elementwise over the flat
// tensor (detail::for_each_flat).
#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::load;
using detail::store;

// std::max(h, 0.0f) as the CPU: h < 0 ? 0 : h.
__device__ __forceinline__ float relu(float h) { return h < 0.0f ? 0.0f : h; }

struct Relu2Forward {
  const bf16* h;
  bf16* g;
  template <int V>
  __device__ void apply(int64_t i) const {
    float v[V];
    load<V>(h + i, v);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float r = relu(v[k]);
      v[k] = r * r;
    }
    store<V>(g + i, v);
  }
};

struct Relu2Backward {
  const bf16 *dg, *h;
  bf16* dh;
  template <int V>
  __device__ void apply(int64_t i) const {
    float v[V], g[V];
    load<V>(h + i, v);
    load<V>(dg + i, g);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = 2.0f * relu(v[k]) * g[k];
    store<V>(dh + i, v);
  }
};

}  // namespace

void relu2_forward(const bf16* h, int64_t n, bf16* g) {
  detail::for_each_flat(n, {h, g}, Relu2Forward{h, g}, "relu2_forward");
}

void relu2_backward(const bf16* dg, const bf16* h, int64_t n, bf16* dh) {
  detail::for_each_flat(n, {dg, h, dh}, Relu2Backward{dg, h, dh}, "relu2_backward");
}

}  // namespace q2::cuda::ops
