// 8. Requantization: from a packed NVFP4 tensor A [R, C] on the device (blocked scales,
// tensor scale) to MS-EDEN of dequantize(A)^T ([C, R], rotated along R), reading only the
// packed input. Equals quantize_ms_eden(transpose(A.dequantize()), Rht(128, seed), sr_seed).
//
// Design: as ms_eden_transposed.cu, on tiles of 128 rows x 256 columns of A: the tile's codes
// (128 rows x 128 bytes, swizzled like the BF16 tile) and its scales (the 4 consecutive 512-byte
// blocked tiles that cover exactly these 128 rows x 16 scale columns) are copied into shared
// memory with 16-byte cp.async, double-buffered. Each thread owns one word column (8 columns of
// A, one scale column) of 16 rows 16g .. 16g+15 (g = lane % 8): 16 word and 16 scale loads for
// 128 elements. Dequantization, exactly NVFP4Tensor::dequantize's e2m1 * e4m3 * t (left to
// right in float32), is done in half precision first: a nibble n becomes the E4M3 bits
// (n & 8) << 4 | (n & 7) << 2, which encode e2m1(n) * 2^-6; `cvt.rn.f16x2.e4m3x2` turns two of
// them into an f16 pair, and one HMUL2 by the decoded scale gives e2m1 * s * 2^-6 exactly (at
// most 5 significant bits, between 2^-16 and 42). Converted to float32 and multiplied by
// t * 2^6 (exact), that is the reference's single rounding of e2m1 * s * t. The rotation's sign
// is part of the per-row multiplier (x * -1 is exact). Then rht128_spread8, eden_group, stores
// and ms_eden.cu's pass 2. NaN/Inf: a non-finite t or a NaN scale code raises the workspace
// flag; products cannot overflow while 6 * 448 * |t| is finite, and otherwise (t above ~1.2e35)
// a slower path also checks every value. Fallback and two rounds: ms_eden.cu's.
#include <cuda_fp16.h>

#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256, kTileR = 128, kTileC = 256;

// The two E4M3 codes in the low 16 bits of `e` as an f16 pair (exact).
__device__ __forceinline__ __half2 e4m3x2_to_half2(uint32_t e) {
  uint32_t h;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(static_cast<uint16_t>(e & 0xFFFFu)));
  return *reinterpret_cast<const __half2*>(&h);
}

// Two E2M1 codes (bytes 0 and 1 of `e`, already in the E4M3 form above) times the f16 pair s2.
__device__ __forceinline__ __half2 e2m1x2_times(uint32_t e, __half2 s2) { return __hmul2(e4m3x2_to_half2(e), s2); }

// The E4M3 form of the 4 nibbles in the low halves of the bytes of x (x & 0xF0F0F0F0 == 0):
// (n & 7) << 2 | (n & 8) << 4 = 4 n + 12 (n & 8).
__device__ __forceinline__ uint32_t e4m3_form(uint32_t x) { return (x + 3u * (x & 0x08080808u)) << 2; }

// One unit: 16 rows x 8 columns, output groups o + col * gpr for columns col = 0..7 of the unit.
// tm is t * 2^6, or t itself when Checked: then each value is the reference's (e2m1 * s) * t,
// with e2m1 * s = p * 2^6 exact, and is checked for overflow.
template <bool Checked, bool Fallback, bool Twice>
__device__ __forceinline__ void requant_unit(const uint32_t (&w)[16], const __half2 (&s2)[16], float tm, uint32_t sb,
                                             uint32_t sb_then, int lane, bool valid, int64_t gpr, int64_t o,
                                             const EdenFallback& fb,
                                             uint2* __restrict__ packed, float* __restrict__ corrected, float& cmax,
                                             bool& bad) {
  uint32_t e[16];  // even columns 0, 2, 4, 6 first, then the odd ones
#pragma unroll 1
  for (int k = 0; k < 2; ++k) {
#pragma unroll
    for (int i = 0; i < 16; ++i) e[i] = e4m3_form((w[i] >> (4 * k)) & 0x0F0F0F0Fu);
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // columns 4h + k and 4h + k + 2
      float ya[16], yb[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const float2 p = __half22float2(e2m1x2_times(e[i] >> (16 * h), s2[i]));
        const float m = (sb >> i) & 1u ? -tm : tm;
        ya[i] = Checked ? (p.x * 64.0f) * m : p.x * m;
        yb[i] = Checked ? (p.y * 64.0f) * m : p.y * m;
        if (Checked) bad = bad || (valid && (!is_finite(ya[i]) || !is_finite(yb[i])));
      }
      first_round<Twice>(ya, lane, sb_then);
      first_round<Twice>(yb, lane, sb_then);
      const bool sr_a = Fallback && eden_falls_back8(ya, fb.tau), sr_b = Fallback && eden_falls_back8(yb, fb.tau);
      rht128_spread8(ya, lane);
      rht128_spread8(yb, lane);
      const int64_t col = 4 * h + k;
      uint2 pa, pb;
      const float ca = eden_or_fallback_group(ya, sr_a, fb, 16 * (o + col * gpr), pa);
      const float cb = eden_or_fallback_group(yb, sr_b, fb, 16 * (o + (col + 2) * gpr), pb);
      if (valid) store_column_pair(packed, corrected, o + col * gpr, 2 * gpr, pa, ca, pb, cb, cmax);
    }
  }
}

template <bool Fallback, bool Twice>
__global__ void __launch_bounds__(kThreads, 2) requant_kernel(const uint8_t* __restrict__ codes_in,
                                                            const uint8_t* __restrict__ scales_in,
                                                            const float* __restrict__ tensor_scale_in, int64_t R,
                                                            int64_t C, EdenSigns signs, uint2* __restrict__ packed,
                                                            float* __restrict__ corrected, FlagSet flags,
                                                            EdenFallback fb) {
  dependent_launch_prologue();
  __shared__ __align__(16) uint32_t tile[2][kTileR * 32];  // codes, 128 bytes a row, swizzled
  __shared__ __align__(16) uint8_t sc[2][4 * 512];          // 4 blocked scale tiles

  const int lane = threadIdx.x & 31, g = lane & 7, wc = threadIdx.x >> 3;  // word column 0..31
  const uint32_t sb = group_sign_bits(signs.in, g), sb_then = group_sign_bits(signs.then, g);
  const float t = *tensor_scale_in;
  // Products e2m1 * s stay within 6 * 448; below this t no value can overflow.
  const bool checked = !(fabsf(t) <= 0x1.fffffep127f / 2688.0f);
  const int64_t row_bytes = C / 2, scale_cols = C / kBlock, tiles_per_row = (scale_cols + 3) / 4;
  const int64_t tiles_c = (C + kTileC - 1) / kTileC, tiles = R / kTileR * tiles_c;
  const int64_t gpr = R / kBlock;  // groups per output row

  auto issue = [&](int64_t tt, int stage) {
    const int64_t r0 = tt / tiles_c * kTileR, c0 = tt % tiles_c * kTileC;
    load_tile_128x128(tile[stage], codes_in + r0 * row_bytes, row_bytes, c0 / 2, row_bytes);
    if (threadIdx.x < 128) {  // 4 blocked tiles x 512 bytes = 128 chunks
      const int64_t kt = c0 / 64 + threadIdx.x / 32;
      const bool in = kt < tiles_per_row;
      const uint8_t* src = scales_in + ((r0 / kTileR) * tiles_per_row + kt) * 512 + (threadIdx.x % 32) * 16;
      cp_async16(&sc[stage][threadIdx.x * 16], in ? src : scales_in, in ? 16 : 0);
    }
  };

  float cmax = 0.0f;
  bool bad = !is_finite(t);
  // Row 16g + i of word column wc: word (16g + i) * 32 + (wc ^ 4g); its scale (column wc / 2
  // of the tile) at (wc / 8) * 512 + (16 (g % 2) + i) * 16 + (g / 2) * 4 + (wc / 2) % 4.
  const int word0 = 16 * g * 32 + (wc ^ (g << 2));
  const int scale0 = (wc >> 3) * 512 + (g & 1) * 256 + (g >> 1) * 4 + ((wc >> 1) & 3);
  for_each_tile_double_buffered(tiles, issue, [&](int64_t tt, int stage) {
    const int64_t r0 = tt / tiles_c * kTileR, c = tt % tiles_c * kTileC + 8 * wc;
    const bool valid = c < C;
    uint32_t w[16];
    __half2 s2[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      w[i] = tile[stage][word0 + 32 * i];
      const uint32_t s = sc[stage][scale0 + 16 * i];
      bad = bad || (valid && (s & 0x7Fu) == 0x7Fu);  // a NaN scale: every product is NaN
      s2[i] = e4m3x2_to_half2(s * 0x101u);
    }
    const int64_t o = c * gpr + r0 / kBlock + g;
    if (checked)
      requant_unit<true, Fallback, Twice>(w, s2, t, sb, sb_then, lane, valid, gpr, o, fb, packed, corrected, cmax,
                                          bad);
    else
      requant_unit<false, Fallback, Twice>(w, s2, t * 64.0f, sb, sb_then, lane, valid, gpr, o, fb, packed, corrected,
                                           cmax, bad);
  });
  publish_cmax(cmax, bad && tiles > 0, flags);
}

}  // namespace
}  // namespace detail

void requantize_ms_eden_transposed_async(const DeviceNVFP4& a, const std::string& name, const EdenRotation& r,
                                         uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream,
                                         __nv_bfloat16* expanded, AlphaLink link, double eden_fallback) {
  const detail::EdenFallback fb = detail::eden_setup(r, eden_fallback, sr_seed, name);
  detail::require(a.rows > 0 && a.cols > 0 && a.packed.get(), name, "is empty");
  detail::require(a.rows % 128 == 0, name,
                  std::to_string(a.rows) + " rows is not a multiple of 128 (requantization rotates 128-row chunks)");
  detail::require(a.cols % 32 == 0, name,
                  "row length " + std::to_string(a.cols) + " is not a multiple of 32 (16-byte rows of codes)");
  const int64_t groups = a.rows * a.cols / kBlock;
  detail::require(groups < (int64_t{1} << 31), name, "has 2^31 or more 16-groups (too large)");
  out.ensure(a.cols, a.rows);
  float* corrected = ws.scratch(groups);
  const int64_t tiles = a.rows / detail::kTileR * ((a.cols + detail::kTileC - 1) / detail::kTileC);
  const auto kernel = r.twice    ? detail::requant_kernel<false, true>
                      : fb.tau > 0 ? detail::requant_kernel<true, false>
                                   : detail::requant_kernel<false, false>;
  const int blocks = detail::persistent_blocks(reinterpret_cast<const void*>(kernel), detail::kThreads, 0, tiles);
  const detail::FlagSet flags = detail::next_flags(ws);
  detail::launch_dependent("requant_kernel", kernel, blocks, detail::kThreads, stream, a.packed.get(), a.scales.get(),
                           a.tensor_scale.get(), a.rows, a.cols, detail::eden_signs(r),
                           reinterpret_cast<uint2*>(out.packed.get()), corrected, flags, fb);
  ws.next_turn();
  detail::launch_eden_scales(corrected, a.cols, a.rows, sr_seed, flags.use, out, stream, expanded, link);
}

void requantize_ms_eden_transposed(const DeviceNVFP4& a, const std::string& name, const EdenRotation& r,
                                   uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream,
                                   double eden_fallback) {
  requantize_ms_eden_transposed_async(a, name, r, sr_seed, out, ws, stream, nullptr, {}, eden_fallback);
  ws.throw_if_nonfinite(name, stream);
}

}  // namespace q2::cuda
