// Fused softmax cross-entropy, one block per row and two passes over the row: pass 1 an online
// (max, sum of exp) per thread, combined across the block; pass 2 writes the gradient (the
// second read mostly hits L2). Row losses go to a float buffer that one block sums in a fixed
// order in float64: deterministic.
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

constexpr int kThreads = 512;
constexpr float kLog2e = 1.4426950408889634f;

// A row split into a scalar head up to the first 16-byte boundary, 8-element vectors, and a
// scalar tail (vocab need not be a multiple of 8, so rows start at any 2-byte offset).
struct RowSplit {
  int64_t head, vec_end;
  __device__ RowSplit(const bf16* row, int64_t n) {
    const int64_t to_boundary = static_cast<int64_t>((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / 2;
    head = to_boundary < n ? to_boundary : n;
    vec_end = head + (n - head) / 8 * 8;
  }
};

// Running (max m, sum of exp(z - m)) of one thread; m = -inf while empty.
struct MaxSum {
  float m = -INFINITY, s = 0.0f;
  __device__ void add(const float* z, int n) {  // n <= 8 values
    float mx = m;
    for (int k = 0; k < n; ++k) mx = fmaxf(mx, z[k]);
    const float m2 = mx * kLog2e;
    float acc = s == 0.0f ? 0.0f : s * exp2f(__fmaf_rn(m, kLog2e, -m2));
    for (int k = 0; k < n; ++k) acc += exp2f(__fmaf_rn(z[k], kLog2e, -m2));
    m = mx;
    s = acc;
  }
  __device__ void merge(float om, float os) {
    const float mx = fmaxf(m, om);
    if (mx == -INFINITY) return;
    const float m2 = mx * kLog2e;
    s = (s == 0.0f ? 0.0f : s * exp2f(__fmaf_rn(m, kLog2e, -m2))) +
        (os == 0.0f ? 0.0f : os * exp2f(__fmaf_rn(om, kLog2e, -m2)));
    m = mx;
  }
};

__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(const bf16* logits, int64_t vocab, const uint32_t* __restrict__ targets, bf16* dlogits,
                         float scale, float* __restrict__ row_loss, unsigned* __restrict__ bad_target) {
  __shared__ float shared_m[32], shared_s[32];
  __shared__ float target_logit;
  const int64_t t = blockIdx.x;
  const bf16* z = logits + t * vocab;
  const uint32_t target = targets[t];
  const bool target_ok = target < vocab;
  if (threadIdx.x == 0) {
    target_logit = target_ok ? __bfloat162float(z[target]) : NAN;  // read before dlogits may overwrite it
    if (!target_ok) atomicExch(bad_target, 1u);
  }
  const RowSplit split(z, vocab);

  MaxSum ms;
  for (int64_t i = threadIdx.x; i < split.head; i += blockDim.x) {
    const float v = __bfloat162float(z[i]);
    ms.add(&v, 1);
  }
  for (int64_t i = split.head + threadIdx.x * 8; i < split.vec_end; i += blockDim.x * 8) {
    float v[8];
    detail::load<8>(z + i, v);
    ms.add(v, 8);
  }
  for (int64_t i = split.vec_end + threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = __bfloat162float(z[i]);
    ms.add(&v, 1);
  }
  // Block combine in a fixed order: warps by shuffles, then warp 0 over the warps.
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xFFFFFFFFu, ms.m, o), os = __shfl_xor_sync(0xFFFFFFFFu, ms.s, o);
    ms.merge(om, os);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared_m[warp] = ms.m, shared_s[warp] = ms.s;
  __syncthreads();
  MaxSum all;
  if (lane < static_cast<int>(blockDim.x >> 5)) all.m = shared_m[lane], all.s = shared_s[lane];
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xFFFFFFFFu, all.m, o), os = __shfl_xor_sync(0xFFFFFFFFu, all.s, o);
    all.merge(om, os);
  }
  const float lse = all.m + logf(all.s);
  if (threadIdx.x == 0) row_loss[t] = lse - target_logit;
  if (!dlogits) return;

  // dlogits = p * scale, minus scale at the target (cpu::cross_entropy's order).
  const float lse2 = lse * kLog2e;
  bf16* g = dlogits + t * vocab;
  auto grad = [&](int64_t i, float v) {
    const float d = exp2f(__fmaf_rn(v, kLog2e, -lse2)) * scale;
    return i == target ? d - scale : d;
  };
  for (int64_t i = threadIdx.x; i < split.head; i += blockDim.x)
    g[i] = __float2bfloat16_rn(grad(i, __bfloat162float(z[i])));
  for (int64_t i = split.head + threadIdx.x * 8; i < split.vec_end; i += blockDim.x * 8) {
    float v[8];
    detail::load<8>(z + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = grad(i + k, v[k]);
    detail::store<8>(g + i, v);
  }
  for (int64_t i = split.vec_end + threadIdx.x; i < vocab; i += blockDim.x)
    g[i] = __float2bfloat16_rn(grad(i, __bfloat162float(z[i])));
}

}  // namespace

double cross_entropy(const bf16* logits, int64_t rows, int64_t vocab, const uint32_t* targets, bf16* dlogits,
                     float scale) {
  if (rows <= 0) return 0.0;
  detail::require(vocab > 0 && vocab <= UINT32_MAX, "cross_entropy", "bad vocabulary size");
  detail::require(rows <= INT32_MAX, "cross_entropy", "too many rows");
  detail::require_aligned(logits, "cross_entropy", "logits");
  if (dlogits) detail::require_aligned(dlogits, "cross_entropy", "dlogits");
  // One scratch allocation: the status word, the float64 total, then the row losses.
  detail::Scratch<double> scratch(2 + (rows + 1) / 2);
  auto* bad = reinterpret_cast<unsigned*>(scratch.get());
  double* total = scratch.get() + 1;
  auto* row_loss = reinterpret_cast<float*>(scratch.get() + 2);
  check(cudaMemsetAsync(bad, 0, sizeof(unsigned), 0), "cudaMemsetAsync");
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads>>>(logits, vocab, targets, dlogits, scale, row_loss,
                                                                  bad);
  check_launch("cross_entropy_kernel");
  detail::sum_one_block_kernel<<<1, 1024>>>(row_loss, rows, total);
  check_launch("sum_one_block_kernel (row losses)");
  struct {
    unsigned bad;
    unsigned pad;
    double total;
  } host{};
  check(cudaMemcpyAsync(&host, scratch.get(), sizeof host, cudaMemcpyDeviceToHost, 0), "cross_entropy (read back)");
  check(cudaStreamSynchronize(0), "cross_entropy (synchronize)");
  if (host.bad) throw Error("cross_entropy: a target id is outside the vocabulary of " + std::to_string(vocab));
  return host.total;
}

}  // namespace q2::cuda::ops
