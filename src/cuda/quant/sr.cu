// 3. Stochastic-rounding NVFP4 quantization in 1x16 blocks (quant/sr.cpp).
//
// Design as rtn.cu: one thread owns one 16-group (for_each_group, one 8-byte code store, one
// scale byte at its blocked offset). Element (r, c) uses Philox word (seed, kElementSR,
// r * cols + c): the group's 16 elements are 4 whole Philox blocks, generated in the thread
// exactly as sr.cpp does. Quotients and rounding: fast_codec.h (Quotient, e2m1_sr_fast).
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

template <bool Fast>
__device__ __forceinline__ void sr_block(const float (&v)[16], const Quotient& q, uint64_t seed, int64_t gid,
                                         uint32_t (&codes)[16]) {
#pragma unroll
  for (int i = 0; i < 16; i += 4) {
    const philox::Block r = philox::words4(seed, philox::kElementSR, static_cast<uint64_t>(gid) * 4 + i / 4);
#pragma unroll
    for (int j = 0; j < 4; ++j) codes[i + j] = e2m1_sr_fast(Fast ? q.near(v[i + j]) : v[i + j] / q.d, r.v[j]);
  }
}

__global__ void __launch_bounds__(kThreads) sr_1x16_kernel(const __nv_bfloat16* __restrict__ x, int64_t groups,
                                                            const float* __restrict__ amax, float val_max,
                                                            uint64_t seed, uint2* __restrict__ packed,
                                                            uint8_t* __restrict__ scales, float* tensor_scale,
                                                            FastDiv groups_per_row, int64_t tiles_per_row) {
  dependent_launch_prologue();
  const float amax_v = *amax;
  const float t = amax_v == 0.0f ? 1.0f : amax_v / (448.0f * val_max);  // quant::tensor_scale(amax, 448, val_max)
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = t;
  for_each_group(x, groups, [&](int64_t gid, bool valid, const float (&v)[16]) {
    if (!valid) return;
    const uint8_t s = e4m3_encode_fast((group_amax(v) / val_max) / t);
    const Quotient q(e4m3_decode_fast(s) * t);
    bool fast = q.fast;  // the probabilities use every bit of x / d: near() only where it is exact
#pragma unroll
    for (int i = 0; i < 16; ++i) fast = fast && q.exact_for(v[i]);
    uint32_t codes[16];
    if (fast)
      sr_block<true>(v, q, seed, gid, codes);
    else
      sr_block<false>(v, q, seed, gid, codes);
    packed[gid] = q.d == 0.0f ? uint2{0u, 0u} : pack16(codes);
    const uint32_t row = groups_per_row.div(static_cast<uint32_t>(gid));
    const uint32_t k = static_cast<uint32_t>(gid) - row * groups_per_row.d;
    scales[blocked_offset(row, k, tiles_per_row)] = s;
  });
}

}  // namespace
}  // namespace detail

void quantize_sr_async(const BF16View& x, const float* amax, float scale_override, uint64_t seed, DeviceNVFP4& out,
                       cudaStream_t stream) {
  detail::require_input(x, kBlock, "NVFP4 blocks are 16 elements along a row");
  out.ensure(x.rows, x.cols);
  const int64_t groups = x.rows * x.cols / kBlock, g = x.cols / kBlock;
  const float val_max = 6.0f / scale_override;
  const int blocks = detail::persistent_blocks(reinterpret_cast<const void*>(detail::sr_1x16_kernel), detail::kThreads,
                                               0, (groups + detail::kThreads - 1) / detail::kThreads);
  detail::launch_dependent("sr_1x16_kernel", detail::sr_1x16_kernel, blocks, detail::kThreads, stream, x.data, groups,
                           amax, val_max, seed, reinterpret_cast<uint2*>(out.packed.get()), out.scales.get(),
                           out.tensor_scale.get(), detail::FastDiv(static_cast<uint32_t>(g)), (g + 3) / 4);
}

void quantize_sr(const BF16View& x, float scale_override, uint64_t seed, DeviceNVFP4& out, Workspace& ws,
                 cudaStream_t stream) {
  amax_async(x, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
  quantize_sr_async(x, ws.amax(), scale_override, seed, out, stream);
}

}  // namespace q2::cuda
