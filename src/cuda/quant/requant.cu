// 8. Requantization: from a packed NVFP4 tensor A [R, C] on the device (blocked scales,
// tensor scale) to MS-EDEN of dequantize(A)^T ([C, R], rotated along R), reading only the
// packed input. Equals quantize_ms_eden(transpose(A.dequantize()), Rht(128, seed), sr_seed).
//
// Design: as ms_eden_transpose.cu, on tiles of 128 rows x 256 columns of A: the tile's codes
// (128 rows x 128 bytes, swizzled like the BF16 tile) and its scales (the 4 consecutive 512-byte
// blocked tiles that cover exactly these 128 rows x 16 scale columns) are copied into shared
// memory with 16-byte cp.async, double-buffered. Each thread owns 4 units (byte column bc,
// g = lane % 8): the 16 codes of rows 16g .. 16g+15 for columns c0 + 2bc and c0 + 2bc + 1.
// Dequantized values follow NVFP4Tensor::dequantize: e2m1 * e4m3 * t, left to right in
// float32, with 16- and 256-entry shared tables filled by e2m1::decode and e4m3::decode. Then
// signs, rht128_spread8, eden_group, stores, and ms_eden.cu's pass 2. NaN/Inf in the
// dequantized input (a NaN scale code, a non-finite product) raise the workspace flag.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256, kTileR = 128, kTileC = 256, kUnits = kTileC / 2 * 8 / kThreads;

__global__ void __launch_bounds__(kThreads) requant_kernel(const uint8_t* __restrict__ codes_in,
                                                            const uint8_t* __restrict__ scales_in,
                                                            const float* __restrict__ tensor_scale_in, int64_t R,
                                                            int64_t C, uint4 signs, uint2* __restrict__ packed,
                                                            float* __restrict__ corrected, Flags* flags) {
  __shared__ __align__(16) uint32_t tile[2][kTileR * 32];  // codes, 128 bytes a row, swizzled
  __shared__ __align__(16) uint8_t sc[2][4 * 512];          // 4 blocked scale tiles
  __shared__ float lut4[16], lut8[256];
  if (threadIdx.x < 16) lut4[threadIdx.x] = e2m1::decode(static_cast<uint8_t>(threadIdx.x));
  lut8[threadIdx.x] = e4m3::decode(static_cast<uint8_t>(threadIdx.x));

  const int lane = threadIdx.x & 31, g = lane & 7;
  const uint32_t sb = group_sign_bits(signs, g);
  const float t_in = *tensor_scale_in;
  const int64_t row_bytes = C / 2, scale_cols = C / kBlock, tiles_per_row = (scale_cols + 3) / 4;
  const int64_t tiles_c = (C + kTileC - 1) / kTileC, tiles = R / kTileR * tiles_c;
  const int64_t groups_per_out_row = R / kBlock;

  auto issue = [&](int64_t t, int stage) {
    const int64_t r0 = t / tiles_c * kTileR, c0 = t % tiles_c * kTileC;
    load_tile_128x128(tile[stage], codes_in + r0 * row_bytes, row_bytes, c0 / 2, row_bytes);
    if (threadIdx.x < 128) {  // 4 blocked tiles x 512 bytes = 128 chunks
      const int64_t kt = c0 / 64 + threadIdx.x / 32;
      const bool in = kt < tiles_per_row;
      const uint8_t* src = scales_in + ((r0 / kTileR) * tiles_per_row + kt) * 512 + (threadIdx.x % 32) * 16;
      cp_async16(&sc[stage][threadIdx.x * 16], in ? src : scales_in, in ? 16 : 0);
    }
  };

  float cmax = 0.0f;
  bool bad = !is_finite(t_in);
  // The first tile's barrier also publishes the tables.
  for_each_tile_double_buffered(tiles, issue, [&](int64_t t, int stage) {
    const int64_t r0 = t / tiles_c * kTileR, c0 = t % tiles_c * kTileC;
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(tile[stage]);
#pragma unroll 1
    for (int u = 0; u < kUnits; ++u) {
      const int bc = (threadIdx.x >> 3) + (kThreads / 8) * u;  // byte column 0..127
      const int kk = bc >> 3;                                    // scale column in the tile
      float ylo[16], yhi[16];
      uint32_t emax = 0;
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int row = 16 * g + i;
        const uint32_t code = bytes[4 * swizzled_word(row, bc >> 2) + (bc & 3)];
        const float s = lut8[sc[stage][(kk >> 2) * 512 + (row & 31) * 16 + (row >> 5) * 4 + (kk & 3)]];
        const float lo = lut4[code & 0xFu] * s * t_in, hi = lut4[code >> 4] * s * t_in;
        const uint32_t flip = ((sb >> i) & 1u) << 31;
        emax = max(emax, max(__float_as_uint(lo) & 0x7F800000u, __float_as_uint(hi) & 0x7F800000u));
        ylo[i] = __uint_as_float(__float_as_uint(lo) ^ flip);  // x * -1 is a sign flip
        yhi[i] = __uint_as_float(__float_as_uint(hi) ^ flip);
      }
      rht128_spread8(ylo, lane);
      rht128_spread8(yhi, lane);
      uint2 plo, phi;
      const float clo = eden_group(ylo, plo), chi = eden_group(yhi, phi);
      const int64_t c = c0 + 2 * bc;
      if (c < C) {
        bad = bad || emax == 0x7F800000u;
        store_column_pair(packed, corrected, c * groups_per_out_row + r0 / kBlock + g, groups_per_out_row, plo, clo,
                          phi, chi, cmax);
      }
    }
  });
  publish_cmax(cmax, bad && tiles > 0, flags);
}

}  // namespace
}  // namespace detail

void requantize_ms_eden_transposed_async(const DeviceNVFP4& a, const std::string& name, const quant::Rht& r,
                                         uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream,
                                         __nv_bfloat16* expanded) {
  detail::require_rht128(r, name);
  detail::require(a.rows > 0 && a.cols > 0 && a.packed.get(), name, "is empty");
  detail::require(a.rows % 128 == 0, name,
                  std::to_string(a.rows) + " rows is not a multiple of 128 (requantization rotates 128-row chunks)");
  detail::require(a.cols % 32 == 0, name,
                  "row length " + std::to_string(a.cols) + " is not a multiple of 32 (16-byte rows of codes)");
  const int64_t groups = a.rows * a.cols / kBlock;
  detail::require(groups < (int64_t{1} << 31), name, "has 2^31 or more 16-groups (too large)");
  out.ensure(a.cols, a.rows);
  detail::Flags* flags = detail::flags_of(ws);
  float* corrected = detail::begin_eden_pass1(ws, groups, stream);
  const int64_t tiles = a.rows / detail::kTileR * ((a.cols + detail::kTileC - 1) / detail::kTileC);
  const int blocks =
      detail::persistent_blocks(reinterpret_cast<const void*>(detail::requant_kernel), detail::kThreads, 0, tiles);
  detail::requant_kernel<<<blocks, detail::kThreads, 0, stream>>>(
      a.packed.get(), a.scales.get(), a.tensor_scale.get(), a.rows, a.cols,
      detail::sign_words(r),
      reinterpret_cast<uint2*>(out.packed.get()), corrected, flags);
  check_launch("requant_kernel");
  detail::launch_eden_scales(corrected, a.cols, a.rows, sr_seed, flags, out, stream, expanded);
}

void requantize_ms_eden_transposed(const DeviceNVFP4& a, const std::string& name, const quant::Rht& r,
                                   uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream) {
  requantize_ms_eden_transposed_async(a, name, r, sr_seed, out, ws, stream);
  ws.throw_if_nonfinite(name, stream);
}

}  // namespace q2::cuda
