// 6. Fused randomized Hadamard transform (128) + MS-EDEN with post-hoc range alignment
// (quant/ms_eden.cpp, default config), and pass 2, shared with the transposed variants.
//
// Pass 1 design: one thread owns one 16-group (two 16-byte loads; the next group is loaded
// before the current one is computed); the 8 lanes with equal lane / 8 hold one 128-chunk
// (groups are chunk-aligned because cols % 128 == 0, so a warp covers 4 chunks = 1 KiB of
// input). Signs are applied by flipping BF16 sign bits (x * -1 exactly), the FWHT runs as
// rht128_spread8 (stages 1..8 in the thread, 16..64 by xor shuffles; the same pairs and
// roundings as the CPU's fwht), then the thread runs the CPU's per-group code sequentially:
// g_max, m = RTZ_E8M4(g_max / s), v = y * (1/m), codes, sum v^2 and sum v*q over i = 0..15,
// c = m * S. Codes leave as one 8-byte store, c as one float into the scratch [rows, cols/16]
// (a warp writes 256 + 128 contiguous bytes). The maximum of c (the CPU's std::max, NaN never
// wins) is reduced per block and merged with atomicMax on the float bits (non-negative
// floats; the word starts zeroed, see Workspace). Input NaN/Inf: per-half maximum of
// the BF16 exponent fields, reported through the workspace flag. No separate amax pass.
//
// Pass 2 design: one thread owns 4 consecutive scales of a row: one 16-byte scratch load, one
// Philox call (the 4 words of indices 4q .. 4q+3 = row * cols/16 + 4k' .. +3, exactly
// philox::word's addressing), t = max / 256, s8 = SR_E4M3(c / t) with e4m3_sr_fast (the
// reference encode_sr bit for bit, c / t >= 0), and one 4-byte store (the 4 scales are
// contiguous in the blocked layout).
// Optionally it also writes the unscaled BF16 expansion for the emulated GEMM, which needs the
// final scales and so cannot come earlier.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) ms_eden_rows_kernel(const uint4* __restrict__ x, int64_t groups,
                                                                 uint4 signs, uint2* __restrict__ packed,
                                                                 float* __restrict__ corrected, FlagSet flags) {
  dependent_launch_prologue();
  const int lane = threadIdx.x & 31;
  const uint32_t sb = group_sign_bits(signs, lane & 7);
  // The group's signs at bits 15 - 2j (element 2j) and 31 - 2j (element 2j + 1): the BF16 sign
  // bits to flip in packed pair j are (smask << 2j) & 0x80008000, one register for all eight.
  uint32_t smask = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    smask |= ((sb >> (2 * j)) & 1u) << (15 - 2 * j);
    smask |= ((sb >> (2 * j + 1)) & 1u) << (31 - 2 * j);
  }

  // Tiles of kThreads groups; the loop runs on blockIdx only (block-uniform), so every lane
  // joins the shuffles without the compiler adding convergence code.
  const int64_t tiles = (groups + kThreads - 1) / kThreads;
  float cmax = 0.0f;
  uint32_t emax = 0;
  uint4 a0{}, a1{};
  int64_t gid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (gid < groups) {
    a0 = __ldg(x + 2 * gid);
    a1 = __ldg(x + 2 * gid + 1);
  }
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    asm("" : "+r"(smask));  // opaque: otherwise ptxas rebuilds it from sb in every iteration
    gid = tile * kThreads + threadIdx.x;
    const int64_t next = gid + static_cast<int64_t>(gridDim.x) * kThreads;
    uint4 b0{}, b1{};
    if (next < groups) {
      b0 = __ldg(x + 2 * next);
      b1 = __ldg(x + 2 * next + 1);
    }
    const uint32_t w[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    float y[16];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      emax = exp_max2(emax, w[j]);
      const uint32_t wj = w[j] ^ ((smask << (2 * j)) & 0x80008000u);
      y[2 * j] = bf16_lo(wj);
      y[2 * j + 1] = bf16_hi(wj);
    }
    rht128_spread8(y, lane);
    uint2 p;
    const float c = eden_group(y, p);
    if (gid < groups) {
      packed[gid] = p;
      corrected[gid] = c;
      cmax = ref_max(cmax, c);
    }
    a0 = b0;
    a1 = b1;
  }
  publish_cmax(cmax, exp_max2_nonfinite(emax), flags);
}

constexpr int kScaleThreads = 256;

// Expand: also the unscaled BF16 expansion of the codes (as dequantize_unscaled_async). A warp
// owns 32 consecutive quads = 128 groups = 256 half-groups and writes them in 8 rounds of 32
// consecutive 16-byte stores: in round j lane l expands half-group 32j + l, whose 8 codes (one
// word) it loads itself before the scales are computed, so that the 8 loads overlap that work,
// and whose scale byte it takes from the word of lane 4j + l/8 (a shuffle).
template <bool Expand>
__global__ void __launch_bounds__(kScaleThreads) eden_scales_kernel(const float4* __restrict__ corrected,
                                                                     int64_t quads, FastDiv quads_per_row,
                                                                     int64_t tiles_per_row, uint64_t seed,
                                                                     const Flags* __restrict__ flags,
                                                                     uint32_t* __restrict__ scales,
                                                                     float* __restrict__ tensor_scale,
                                                                     const uint32_t* __restrict__ packed,
                                                                     uint4* __restrict__ expanded, AlphaLink link) {
  dependent_launch_prologue();
  const float t = __uint_as_float(flags->cmax_bits) / 256.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) publish_tensor_scale(t, tensor_scale, link);
  const Quotient by_t(t);  // c / t, exactly as IEEE division wherever by_t.exact_for(c)
  const int lane = threadIdx.x & 31;
  // The expansion's tables, and the prmt selector of this lane's scale byte (round j below).
  const ExpandTables tables = Expand ? expand_tables() : ExpandTables{};
  uint32_t scale_sel = scale_byte_sel((lane / 2) % 4);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  // Warp-uniform loop over the warps' tiles of 32 quads, so every lane joins the shuffles.
  for (int64_t tile = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; tile * 32 < quads;
       tile += warps) {
    const int64_t q = tile * 32 + lane;
    // The expansion's codes first: their loads overlap the scale computation below.
    uint32_t codes[8];
    if (Expand) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int64_t h = tile * 256 + 32 * j + lane;
        codes[j] = h < 8 * quads ? __ldg(packed + h) : 0u;
      }
    }
    uint32_t word = 0;
    if (q < quads) {
      const float4 c = __ldg(corrected + q);
      const uint32_t row = quads_per_row.div(static_cast<uint32_t>(q));
      const uint32_t kq = static_cast<uint32_t>(q) - row * quads_per_row.d;
      const philox::Block r = philox::words4(seed, philox::kScaleSR, static_cast<uint64_t>(q));
      const float cs[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float a = by_t.fast && by_t.exact_for(cs[j]) ? by_t.near(cs[j]) : cs[j] / t;
        const uint32_t s8 = t == 0.0f ? 0u : e4m3_sr_fast(a, r.v[j]);
        word |= s8 << (8 * j);
      }
      scales[blocked_offset(row, 4 * kq, tiles_per_row) >> 2] = word;
    }
    if (Expand) {
      asm("" : "+r"(scale_sel));  // opaque: otherwise ptxas rebuilds it in every round
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint32_t w = __shfl_sync(0xFFFFFFFFu, word, 4 * j + lane / 8);
        const int64_t h = tile * 256 + 32 * j + lane;
        if (h < 8 * quads) expanded[h] = expand8_unscaled(codes[j], expand_scale(w, scale_sel), tables);
      }
    }
  }
}

}  // namespace

void launch_eden_scales(const float* corrected, int64_t rows, int64_t cols, uint64_t sr_seed, Flags* flags,
                        DeviceNVFP4& out, cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  require(reinterpret_cast<uintptr_t>(expanded) % 16 == 0, "BF16 expansion", "device pointer is not 16-byte aligned");
  const int64_t g = cols / kBlock, quads = rows * g / 4;
  const auto kernel = expanded ? eden_scales_kernel<true> : eden_scales_kernel<false>;
  const int blocks = persistent_blocks(reinterpret_cast<const void*>(kernel), kScaleThreads, 0,
                                       (quads + kScaleThreads - 1) / kScaleThreads);
  launch_dependent("eden_scales_kernel", kernel, blocks, kScaleThreads, stream,
                   reinterpret_cast<const float4*>(corrected), quads, FastDiv(static_cast<uint32_t>(g / 4)),
                   (g + 3) / 4, sr_seed, flags,
                   reinterpret_cast<uint32_t*>(out.scales.get()), out.tensor_scale.get(),
                   reinterpret_cast<const uint32_t*>(out.packed.get()), reinterpret_cast<uint4*>(expanded), link);
}

}  // namespace detail

void quantize_ms_eden_async(const BF16View& x, const quant::Rht& r, uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws,
                            cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  detail::require_rht128(r, x.name);
  const int64_t groups =
      detail::require_input(x, 128, "MS-EDEN rotates whole Hadamard chunks along a row");
  out.ensure(x.rows, x.cols);
  float* corrected = ws.scratch(groups);
  const int blocks = detail::persistent_blocks(reinterpret_cast<const void*>(detail::ms_eden_rows_kernel),
                                               detail::kThreads, 0, (groups + detail::kThreads - 1) / detail::kThreads);
  const detail::FlagSet flags = detail::next_flags(ws);
  detail::launch_dependent("ms_eden_rows_kernel", detail::ms_eden_rows_kernel, blocks, detail::kThreads, stream,
                           reinterpret_cast<const uint4*>(x.data), groups, detail::sign_words(r),
                           reinterpret_cast<uint2*>(out.packed.get()), corrected, flags);
  ws.next_turn();
  detail::launch_eden_scales(corrected, x.rows, x.cols, sr_seed, flags.use, out, stream, expanded, link);
}

void quantize_ms_eden(const BF16View& x, const quant::Rht& r, uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws,
                      cudaStream_t stream) {
  quantize_ms_eden_async(x, r, sr_seed, out, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
}

}  // namespace q2::cuda
