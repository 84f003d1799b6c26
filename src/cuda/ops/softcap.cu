// nanochat's logit softcap, forward and backward: cpu::softcap_*'s float32 operations in its
// order (IEEE division, no FMA contraction in this build), rounded once to BF16; the forward's
// tanhf is CUDA's (within 2 ulp, like glibc's, so the two may differ in the last float bit).
// In place, elementwise over the flat tensor (detail::for_each_flat).
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::load;
using detail::store;

struct SoftcapForward {
  bf16* z;
  float cap;
  template <int V>
  __device__ void apply(int64_t i) const {
    float v[V];
    load<V>(z + i, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = cap * tanhf(v[k] / cap);
    store<V>(z + i, v);
  }
};

struct SoftcapBackward {
  bf16* dz;
  const bf16* y;
  float cap;
  template <int V>
  __device__ void apply(int64_t i) const {
    float g[V], v[V];
    load<V>(dz + i, g);
    load<V>(y + i, v);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float t = v[k] / cap;
      g[k] *= 1.0f - t * t;
    }
    store<V>(dz + i, g);
  }
};

}  // namespace

void softcap_forward(bf16* z, int64_t n, float cap) {
  detail::require(cap > 0, "softcap_forward", "the cap must be positive");
  detail::for_each_flat(n, {z}, SoftcapForward{z, cap}, "softcap_forward");
}

void softcap_backward(bf16* dz, const bf16* y, int64_t n, float cap) {
  detail::require(cap > 0, "softcap_backward", "the cap must be positive");
  detail::for_each_flat(n, {dz, y}, SoftcapBackward{dz, y, cap}, "softcap_backward");
}

}  // namespace q2::cuda::ops
