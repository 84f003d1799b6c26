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
//
// Fused (rows only, when a block's tiles fit in 48 KB of shared memory): one cooperative launch
// of the pass-1 kernel keeps each block's codes and corrected scales in shared memory, waits at
// a grid-wide barrier once every block has published its maximum, then computes the scales
// (one thread a quad, as pass 2, 4 tiles at a time) and writes the expansion with the
// 1x16 quantizers' coalesced store_expansion. It saves pass 2's launch, the 4 bytes a group of
// scratch written, and the 12 bytes a group (scratch and codes) pass 2 reads back.
//
// MS-EDEN's fallback (quant/ms_eden.h, eden_fallback > 0) is a second instantiation of each
// pass-1 kernel: before the rotation the 8 lanes of a chunk decide from its outlier share
// (eden_falls_back8), and a chunk that falls back is rounded stochastically
// (quant::eden_fallback_group, the CPU's code) instead of EDEN-corrected
// (eden_or_fallback_group).
//
// Two rounds of rotation (EdenRotation::twice, hadamard_rounds = 2) are a third instantiation of
// each pass-1 kernel (without the fallback): the signs flipped into the BF16 input are the first
// rotation's; first_round rotates and flips by the second's, in registers, before the second
// rht128_spread8.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// What pass 2 writes: the scales of out (blocked layout), its tensor scale (taking part in the
// product's alpha with `link`) and optionally the unscaled BF16 expansion.
struct ScalePass {
  uint64_t seed;
  FastDiv quads_per_row;
  int64_t tiles_per_row;
  uint32_t* scales;
  float* tensor_scale;
  uint4* expanded;
  AlphaLink link;
};

ScalePass scale_pass(int64_t cols, uint64_t seed, DeviceNVFP4& out, __nv_bfloat16* expanded, AlphaLink link) {
  require(reinterpret_cast<uintptr_t>(expanded) % 16 == 0, "BF16 expansion", "device pointer is not 16-byte aligned");
  const int64_t g = cols / kBlock;
  return ScalePass{seed, FastDiv(static_cast<uint32_t>(g / 4)), (g + 3) / 4,
                   reinterpret_cast<uint32_t*>(out.scales.get()), out.tensor_scale.get(),
                   reinterpret_cast<uint4*>(expanded), link};
}

// The 4 scales of quad q (groups 4q .. 4q+3, one row) from their corrected values c: c / t
// rounded stochastically to E4M3 with the Philox words of index q (e4m3_sr_fast: the
// reference encode_sr bit for bit, c / t >= 0), stored at their blocked offset (4 contiguous
// bytes) and returned as one word.
__device__ __forceinline__ uint32_t eden_quad_scales(float4 c, int64_t q, float t, const Quotient& by_t,
                                                     const ScalePass& sp) {
  const uint32_t row = sp.quads_per_row.div(static_cast<uint32_t>(q));
  const uint32_t kq = static_cast<uint32_t>(q) - row * sp.quads_per_row.d;
  const philox::Block r = philox::words4(sp.seed, philox::kScaleSR, static_cast<uint64_t>(q));
  const float cs[4] = {c.x, c.y, c.z, c.w};
  uint32_t word = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float a = by_t.fast && by_t.exact_for(cs[j]) ? by_t.near(cs[j]) : cs[j] / t;
    const uint32_t s8 = t == 0.0f ? 0u : e4m3_sr_fast(a, r.v[j]);
    word |= s8 << (8 * j);
  }
  sp.scales[blocked_offset(row, 4 * kq, sp.tiles_per_row) >> 2] = word;
  return word;
}

// Pass 2's tensor scale t = max(c) / 256 (post-hoc range alignment) from the maximum's float
// bits, written by block 0's thread 0 (taking part in the product's alpha).
__device__ __forceinline__ float eden_tensor_scale(uint32_t cmax_bits, const ScalePass& sp) {
  const float t = __uint_as_float(cmax_bits) / 256.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) publish_tensor_scale(t, sp.tensor_scale, sp.link);
  return t;
}

// Grid-wide barrier on the quantization's zeroed `arrived` word; every block must be resident
// (a cooperative launch).
__device__ __forceinline__ void grid_barrier(uint32_t* arrived) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrived, 1u);
    while (*static_cast<volatile uint32_t*>(arrived) < gridDim.x) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();
}

// Fused: one cooperative launch whose blocks keep the codes and corrected scales of their
// tiles in shared memory (tile k of a block at k * kThreads) instead of the scratch; a grid
// barrier after the maximum is published replaces pass 2's launch, and pass 2 runs on them
// (below). Otherwise pass 1 writes the scratch for eden_scales_kernel. Fallback: MS-EDEN's
// stochastic rounding of dominated chunks, a separate instantiation so that plain MS-EDEN's
// kernels stay as they were.
template <bool Fused, bool Fallback, bool Twice>
__global__ void __launch_bounds__(kThreads) ms_eden_rows_kernel(const uint4* __restrict__ x, int64_t groups,
                                                                 EdenSigns signs, uint2* __restrict__ packed,
                                                                 float* __restrict__ corrected, FlagSet flags,
                                                                 ScalePass sp, EdenFallback fb) {
  dependent_launch_prologue();
  extern __shared__ uint8_t fused_smem[];
  const int per_block = Fused ? static_cast<int>((groups + kThreads - 1) / kThreads - blockIdx.x + gridDim.x - 1) /
                                    static_cast<int>(gridDim.x)
                              : 0;
  uint2* s_codes = reinterpret_cast<uint2*>(fused_smem);
  float* s_c = reinterpret_cast<float*>(s_codes + per_block * kThreads);
  const int lane = threadIdx.x & 31;
  const uint32_t sb = group_sign_bits(signs.in, lane & 7), sb_then = group_sign_bits(signs.then, lane & 7);
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
    first_round<Twice>(y, lane, sb_then);
    const bool sr = Fallback && eden_falls_back8(y, fb.tau);
    rht128_spread8(y, lane);
    uint2 p;
    const float c = eden_or_fallback_group(y, sr, fb, 16 * gid, p);
    if (Fused) {
      const int k = static_cast<int>((tile - blockIdx.x) / gridDim.x);
      s_codes[k * kThreads + threadIdx.x] = p;
      s_c[k * kThreads + threadIdx.x] = c;
    }
    if (gid < groups) {
      packed[gid] = p;
      if (!Fused) corrected[gid] = c;
      cmax = ref_max(cmax, c);
    }
    a0 = b0;
    a1 = b1;
  }
  publish_cmax(cmax, exp_max2_nonfinite(emax), flags);
  if (!Fused) return;

  // Pass 2 on this block's tiles, 4 at a time: thread i computes quad i % 64 of tile i / 64 (a
  // tile's 64 quads are 4-aligned and never straddle a row: cols % 128 == 0), then every warp
  // expands its 32 groups of each of the 4 tiles.
  constexpr int kQuads = kThreads / 4;
  grid_barrier(&flags.use->arrived);
  const float t = eden_tensor_scale(*reinterpret_cast<volatile uint32_t*>(&flags.use->cmax_bits), sp);
  const Quotient by_t(t);
  const ExpandTables tables = expand_tables();
  __shared__ uint32_t s_words[4 * kQuads];
  const int64_t quads = groups / 4;
  for (int k0 = 0; k0 < per_block; k0 += 4) {
    const int k = k0 + static_cast<int>(threadIdx.x) / kQuads;
    const int64_t q = (blockIdx.x + static_cast<int64_t>(k) * gridDim.x) * kQuads + threadIdx.x % kQuads;
    const float* c = s_c + k * kThreads + 4 * (threadIdx.x % kQuads);
    s_words[threadIdx.x] =
        k < per_block && q < quads ? eden_quad_scales(make_float4(c[0], c[1], c[2], c[3]), q, t, by_t, sp) : 0u;
    __syncthreads();
    if (sp.expanded) {
      for (int kk = k0; kk < per_block && kk < k0 + 4; ++kk) {
        const int64_t tile = blockIdx.x + static_cast<int64_t>(kk) * gridDim.x;
        const uint32_t s = s_words[(kk - k0) * kQuads + threadIdx.x / 4] >> (8 * (threadIdx.x % 4)) & 0xFFu;
        store_expansion(sp.expanded, tile * kThreads + (threadIdx.x & ~31), groups,
                        s_codes[kk * kThreads + threadIdx.x], s, tables);
      }
    }
    __syncthreads();  // s_words is rewritten for the next 4 tiles
  }
}

constexpr int kScaleThreads = 256;

// Expand: also the unscaled BF16 expansion of the codes (as dequantize_unscaled_async). A warp
// owns 32 consecutive quads = 128 groups = 256 half-groups and writes them in 8 rounds of 32
// consecutive 16-byte stores: in round j lane l expands half-group 32j + l, whose 8 codes (one
// word) it loads itself before the scales are computed, so that the 8 loads overlap that work,
// and whose scale byte it takes from the word of lane 4j + l/8 (a shuffle).
template <bool Expand>
__global__ void __launch_bounds__(kScaleThreads) eden_scales_kernel(const float4* __restrict__ corrected,
                                                                     int64_t quads, const Flags* __restrict__ flags,
                                                                     const uint32_t* __restrict__ packed,
                                                                     ScalePass sp) {
  dependent_launch_prologue();
  const float t = eden_tensor_scale(flags->cmax_bits, sp);
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
    const uint32_t word = q < quads ? eden_quad_scales(__ldg(corrected + q), q, t, by_t, sp) : 0u;
    if (Expand) {
      asm("" : "+r"(scale_sel));  // opaque: otherwise ptxas rebuilds it in every round
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint32_t w = __shfl_sync(0xFFFFFFFFu, word, 4 * j + lane / 8);
        const int64_t h = tile * 256 + 32 * j + lane;
        if (h < 8 * quads)
          store_expanded(sp.expanded + h, expand8_unscaled(codes[j], expand_scale(w, scale_sel), tables));
      }
    }
  }
}

// A fused launch of the rows kernel over `tiles` tiles: its blocks (all resident) and the
// dynamic shared memory for a block's tiles; none (0 blocks) where that and the kernel's static
// shared memory would exceed 48 KB, the limit without an opt-in.
struct FusedPlan {
  int blocks = 0;
  size_t smem = 0;
};

template <bool Fallback, bool Twice>
FusedPlan fused_plan(int64_t tiles) {
  constexpr size_t kTileBytes = kThreads * (sizeof(uint2) + sizeof(float));
  const void* kernel = reinterpret_cast<const void*>(ms_eden_rows_kernel<true, Fallback, Twice>);
  static const size_t max_smem = [&] {
    cudaFuncAttributes a{};
    check(cudaFuncGetAttributes(&a, kernel), "cudaFuncGetAttributes (fused MS-EDEN)");
    return 48 * 1024 - a.sharedSizeBytes;
  }();
  // Within that limit at least one block fits an SM, so persistent_blocks counts real residents.
  for (int64_t per_block = 1; static_cast<size_t>(per_block) * kTileBytes <= max_smem;) {
    const size_t smem = static_cast<size_t>(per_block) * kTileBytes;
    const int64_t resident = persistent_blocks(kernel, kThreads, smem, tiles);
    if (resident * per_block >= tiles) return {static_cast<int>((tiles + per_block - 1) / per_block), smem};
    per_block = (tiles + resident - 1) / resident;  // more shared memory per block: fewer resident
  }
  return {};
}

// Pass 2's kernel over the `quads` quads of out, writing what `sp` says.
void launch_scales(const float* corrected, int64_t quads, Flags* flags, const DeviceNVFP4& out, const ScalePass& sp,
                   cudaStream_t stream) {
  const auto kernel = sp.expanded ? eden_scales_kernel<true> : eden_scales_kernel<false>;
  const int blocks = persistent_blocks(reinterpret_cast<const void*>(kernel), kScaleThreads, 0,
                                       (quads + kScaleThreads - 1) / kScaleThreads);
  launch_dependent("eden_scales_kernel", kernel, blocks, kScaleThreads, stream,
                   reinterpret_cast<const float4*>(corrected), quads, flags,
                   reinterpret_cast<const uint32_t*>(out.packed.get()), sp);
}

// quantize_ms_eden_async's launches, after its checks.
template <bool Fallback, bool Twice>
void launch_rows(const BF16View& x, const EdenRotation& r, int64_t groups, DeviceNVFP4& out, Workspace& ws,
                 cudaStream_t stream, const ScalePass& sp, const EdenFallback& fb) {
  const int64_t tiles = (groups + kThreads - 1) / kThreads;
  const auto* in = reinterpret_cast<const uint4*>(x.data);
  auto* codes = reinterpret_cast<uint2*>(out.packed.get());
  const FusedPlan plan = fused_plan<Fallback, Twice>(tiles);
  // A device that holds fewer blocks than its occupancy says (e.g. under MPS) refuses the
  // cooperative launch; the two kernels run instead.
  if (plan.blocks && launch_cooperative("ms_eden_rows_kernel (fused)", ms_eden_rows_kernel<true, Fallback, Twice>,
                                        plan.blocks, kThreads, plan.smem, stream, in, groups, eden_signs(r), codes,
                                        nullptr, next_flags(ws), sp, fb)) {
    ws.next_turn();
    return;
  }
  float* corrected = ws.scratch(groups);
  const int blocks =
      persistent_blocks(reinterpret_cast<const void*>(ms_eden_rows_kernel<false, Fallback, Twice>), kThreads, 0, tiles);
  const FlagSet flags = next_flags(ws);
  launch_dependent("ms_eden_rows_kernel", ms_eden_rows_kernel<false, Fallback, Twice>, blocks, kThreads, stream, in,
                   groups, eden_signs(r), codes, corrected, flags, sp, fb);
  ws.next_turn();
  launch_scales(corrected, groups / 4, flags.use, out, sp, stream);
}

}  // namespace

void launch_eden_scales(const float* corrected, int64_t rows, int64_t cols, uint64_t sr_seed, Flags* flags,
                        DeviceNVFP4& out, cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  launch_scales(corrected, rows * (cols / kBlock) / 4, flags, out, scale_pass(cols, sr_seed, out, expanded, link),
                stream);
}

}  // namespace detail

void quantize_ms_eden_async(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws,
                            cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link, double eden_fallback) {
  const detail::EdenFallback fb = detail::eden_setup(r, eden_fallback, sr_seed, x.name);
  const int64_t groups =
      detail::require_input(x, 128, "MS-EDEN rotates whole Hadamard chunks along a row");
  out.ensure(x.rows, x.cols);
  const detail::ScalePass sp = detail::scale_pass(x.cols, sr_seed, out, expanded, link);
  if (r.twice)
    detail::launch_rows<false, true>(x, r, groups, out, ws, stream, sp, fb);
  else if (fb.tau > 0)
    detail::launch_rows<true, false>(x, r, groups, out, ws, stream, sp, fb);
  else
    detail::launch_rows<false, false>(x, r, groups, out, ws, stream, sp, fb);
}

void quantize_ms_eden(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws,
                      cudaStream_t stream, double eden_fallback) {
  quantize_ms_eden_async(x, r, sr_seed, out, ws, stream, nullptr, {}, eden_fallback);
  ws.throw_if_nonfinite(x.name, stream);
}

}  // namespace q2::cuda
