// 5. Dequantization NVFP4 -> BF16 (format/nvfp4.cpp: NVFP4Tensor::dequantize, then
// bf16::encode): value = e2m1 * e4m3 * tensor_scale, left to right in float32.
//
// Design: one thread owns half a 16-group (8 elements): a 4-byte code load, the group's scale
// byte (blocked offset), one 16-byte BF16 store, so a warp's store instruction writes 512
// contiguous bytes; two halves per iteration, both loaded before either is expanded. E2M1
// values come from a 16-entry shared table filled with e2m1::decode itself (expand8); the scale
// is decoded once per half-group; pairs round to BF16 in one hardware conversion.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// Eight E2M1 codes (element 0 in the low nibble) as BF16: e2m1 * s * t left to right in
// float32, rounded to nearest even (NVFP4Tensor::dequantize, then bf16::encode); `lut` holds
// e2m1::decode of the 16 codes. cvt.rn.bf16x2.f32 rounds like bf16::encode (no NaN arises).
__device__ __forceinline__ uint4 expand8(uint32_t p, float s, float t, const float* lut) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t bits = p >> (8 * j);
    const __nv_bfloat162 pair = __floats2bfloat162_rn(lut[bits & 0xFu] * s * t, lut[(bits >> 4) & 0xFu] * s * t);
    w[j] = *reinterpret_cast<const uint32_t*>(&pair);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// The GEMM's alpha: the product of the operands' tensor scales (1 for a missing one).
__global__ void scale_product_kernel(const float* t_a, const float* t_b, float* alpha) {
  *alpha = (t_a ? *t_a : 1.0f) * (t_b ? *t_b : 1.0f);
}

__global__ void __launch_bounds__(kThreads) dequant_kernel(const uint32_t* __restrict__ packed,
                                                            const uint8_t* __restrict__ scales,
                                                            const float* __restrict__ tensor_scale, int64_t halves,
                                                            FastDiv groups_per_row, int64_t tiles_per_row,
                                                            uint4* __restrict__ out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = e2m1::decode(static_cast<uint8_t>(threadIdx.x));
  __syncthreads();
  const float t = tensor_scale ? *tensor_scale : 1.0f;  // unscaled: * 1 is exact
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  auto scale_of = [&](int64_t h) {
    const uint32_t gid = static_cast<uint32_t>(h >> 1);
    const uint32_t row = groups_per_row.div(gid);
    return __ldg(scales + blocked_offset(row, gid - row * groups_per_row.d, tiles_per_row));
  };
  auto expand = [&](int64_t h, uint32_t p, uint8_t sc) { out[h] = expand8(p, e4m3_decode_fast(sc), t, lut); };
  // Two half-groups per iteration, both loaded before either is expanded.
  for (int64_t h = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; h < halves; h += 2 * stride) {
    const int64_t h2 = h + stride;
    const bool two = h2 < halves;
    const uint32_t p0 = __ldg(packed + h), p1 = two ? __ldg(packed + h2) : 0u;
    const uint8_t s0 = scale_of(h), s1 = two ? scale_of(h2) : uint8_t{0};
    expand(h, p0, s0);
    if (two) expand(h2, p1, s1);
  }
}

}  // namespace
}  // namespace detail

namespace detail {
namespace {
void launch_dequant(const DeviceNVFP4& a, __nv_bfloat16* out, const float* tensor_scale, cudaStream_t stream) {
  require(a.rows > 0 && a.packed.get(), "NVFP4 input", "is empty");
  require(reinterpret_cast<uintptr_t>(out) % 16 == 0, "BF16 output", "device pointer is not 16-byte aligned");
  const int64_t g = a.scale_cols(), groups = a.rows * g;
  require(groups < (int64_t{1} << 31), "NVFP4 input", "has 2^31 or more 16-groups (too large)");
  const int blocks = persistent_blocks(reinterpret_cast<const void*>(dequant_kernel), kThreads, 0,
                                       (groups + kThreads - 1) / kThreads);
  dequant_kernel<<<blocks, kThreads, 0, stream>>>(reinterpret_cast<const uint32_t*>(a.packed.get()), a.scales.get(),
                                                  tensor_scale, 2 * groups, FastDiv(static_cast<uint32_t>(g)),
                                                  (g + 3) / 4, reinterpret_cast<uint4*>(out));
  check_launch("dequant_kernel");
}
}  // namespace
}  // namespace detail

void dequantize_async(const DeviceNVFP4& a, __nv_bfloat16* out, cudaStream_t stream) {
  detail::launch_dequant(a, out, a.tensor_scale.get(), stream);
}

void dequantize_unscaled_async(const DeviceNVFP4& a, __nv_bfloat16* out, cudaStream_t stream) {
  detail::launch_dequant(a, out, nullptr, stream);
}

void tensor_scale_product_async(const float* t_a, const float* t_b, float* alpha, cudaStream_t stream) {
  detail::scale_product_kernel<<<1, 1, 0, stream>>>(t_a, t_b, alpha);
  check_launch("scale_product_kernel");
}

}  // namespace q2::cuda
