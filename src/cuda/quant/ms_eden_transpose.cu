// 7. MS-EDEN of the transpose X^T of a BF16 X [R, C] (rotated along R), without writing the
// transpose: equals quantize_ms_eden(transpose(x), Rht(128, seed), sr_seed) bit for bit.
//
// Design: persistent blocks of 256 threads walk tiles of 128 rows (one rotation chunk of R) x
// 64 columns of X. A tile (16 KiB) is copied into shared memory with 16-byte cp.async
// (coalesced 128-byte row segments), double-buffered so the next tile is in flight while the
// current one is computed. Thread (cp, g) with g = lane % 8, cp = 4 * warp + lane / 8 owns
// word column cp (output rows c = c0 + 2cp and c0 + 2cp + 1) and rows 16g .. 16g+15 of the
// tile, i.e. output group g of both output rows; the 8 lanes of a chunk are lanes xor 1, 2, 4,
// so the rotation is the same rht128_spread8 as the row-wise kernel and the per-group code is
// the same eden_group (one thread, order i = 0..15). Shared reads are conflict-free thanks to
// the swizzle (device_common.cuh). Outputs: 8-byte code stores and float scratch stores at
// output group (c, r0/16 + g); pass 2 is ms_eden.cu's. Fallback and two rounds: ms_eden.cu's.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256, kTileR = 128, kTileC = 64;

template <bool Fallback, bool Twice>
__global__ void __launch_bounds__(kThreads) ms_eden_transposed_kernel(const __nv_bfloat16* __restrict__ x, int64_t R,
                                                                       int64_t C, EdenSigns signs,
                                                                       uint2* __restrict__ packed,
                                                                       float* __restrict__ corrected, FlagSet flags,
                                                                       EdenFallback fb) {
  dependent_launch_prologue();
  __shared__ __align__(16) uint32_t tile[2][kTileR * 32];
  const int lane = threadIdx.x & 31, g = lane & 7, cp = (threadIdx.x >> 5) * 4 + (lane >> 3);
  const uint32_t sb = group_sign_bits(signs.in, g), sb_then = group_sign_bits(signs.then, g);
  const int64_t tiles_c = (C + kTileC - 1) / kTileC, tiles = R / kTileR * tiles_c;
  const int64_t groups_per_out_row = R / kBlock;

  auto issue = [&](int64_t t, int stage) {
    const int64_t r0 = t / tiles_c * kTileR, c0 = t % tiles_c * kTileC;
    load_tile_128x128(tile[stage], reinterpret_cast<const uint8_t*>(x + r0 * C), 2 * C, 2 * c0, 2 * C);
  };

  float cmax = 0.0f;
  uint32_t emax = 0;
  for_each_tile_double_buffered(tiles, issue, [&](int64_t t, int stage) {
    float ylo[16], yhi[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      uint32_t w = tile[stage][swizzled_word(16 * g + i, cp)];
      emax = exp_max2(emax, w);
      w ^= ((sb >> i) & 1u) * 0x80008000u;  // sign of element 16g + i, both columns
      ylo[i] = bf16_lo(w);
      yhi[i] = bf16_hi(w);
    }
    first_round<Twice>(ylo, lane, sb_then);
    first_round<Twice>(yhi, lane, sb_then);
    const bool sr_lo = Fallback && eden_falls_back8(ylo, fb.tau), sr_hi = Fallback && eden_falls_back8(yhi, fb.tau);
    rht128_spread8(ylo, lane);
    rht128_spread8(yhi, lane);
    const int64_t r0 = t / tiles_c * kTileR, c = t % tiles_c * kTileC + 2 * cp;
    const int64_t o = c * groups_per_out_row + r0 / kBlock + g;  // ylo's output group; yhi's is the next row's
    uint2 plo, phi;
    const float clo = eden_or_fallback_group(ylo, sr_lo, fb, 16 * o, plo);
    const float chi = eden_or_fallback_group(yhi, sr_hi, fb, 16 * (o + groups_per_out_row), phi);
    if (c < C) store_column_pair(packed, corrected, o, groups_per_out_row, plo, clo, phi, chi, cmax);
  });
  publish_cmax(cmax, exp_max2_nonfinite(emax), flags);
}

}  // namespace
}  // namespace detail

void quantize_ms_eden_transposed_async(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out,
                                       Workspace& ws, cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link,
                                       double eden_fallback) {
  const detail::EdenFallback fb = detail::eden_setup(r, eden_fallback, sr_seed, x.name);
  const int64_t groups = detail::require_input(x, 8, "");
  detail::require(x.rows % 128 == 0, x.name,
                  std::to_string(x.rows) +
                      " rows is not a multiple of 128 (the transposed MS-EDEN rotates 128-row chunks)");
  out.ensure(x.cols, x.rows);
  float* corrected = ws.scratch(groups);
  const int64_t tiles = x.rows / detail::kTileR * ((x.cols + detail::kTileC - 1) / detail::kTileC);
  const auto kernel = r.twice    ? detail::ms_eden_transposed_kernel<false, true>
                      : fb.tau > 0 ? detail::ms_eden_transposed_kernel<true, false>
                                   : detail::ms_eden_transposed_kernel<false, false>;
  const int blocks = detail::persistent_blocks(reinterpret_cast<const void*>(kernel), detail::kThreads, 0, tiles);
  const detail::FlagSet flags = detail::next_flags(ws);
  detail::launch_dependent("ms_eden_transposed_kernel", kernel, blocks, detail::kThreads, stream, x.data, x.rows,
                           x.cols, detail::eden_signs(r), reinterpret_cast<uint2*>(out.packed.get()), corrected, flags,
                           fb);
  ws.next_turn();
  detail::launch_eden_scales(corrected, x.cols, x.rows, sr_seed, flags.use, out, stream, expanded, link);
}

void quantize_ms_eden_transposed(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out,
                                 Workspace& ws, cudaStream_t stream, double eden_fallback) {
  quantize_ms_eden_transposed_async(x, r, sr_seed, out, ws, stream, nullptr, {}, eden_fallback);
  ws.throw_if_nonfinite(x.name, stream);
}

}  // namespace q2::cuda
