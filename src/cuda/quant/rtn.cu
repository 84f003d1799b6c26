// 2./4. Round-to-nearest NVFP4 quantization (quant/rtn.cpp): RTN 1x16, Four-over-Six 1x16 and
// RTN with 16x16 square blocks.
//
// Design: one thread owns one 16-group (device_common.cuh for_each_group: 32 bytes of BF16,
// a warp reads 1 KiB contiguous, the next group's loads issued before the current group is
// computed), so every per-group computation, including the Four-over-Six error sum over
// i = 0..15, runs in the reference's order inside one thread. Quotients x / (s t) come from
// fast_codec.h's Quotient (one reciprocal per group, exhaustively checked against division).
// Codes leave as one 8-byte store per thread (a warp writes 256 contiguous bytes), the scale as
// one byte at its blocked offset, the optional BF16 expansion in 16-byte stores that the warp
// exchanges its codes for (shuffles), so that each store instruction covers 512 contiguous
// bytes. The tensor scale is computed on the device from the amax pointer by every thread
// (same expression as quant::tensor_scale) and written by thread 0, which with an AlphaLink also
// takes part in the GEMM's alpha.
// 16x16: a block of 16 warps covers 16 rows x 32 groups; the tile maximum goes through
// shared memory (max is exact in any order for finite input), double-buffered, with the next
// tile's input loaded ahead.
#include "cuda/quant/device_common.cuh"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// Codes of one block against divisor q.d, packed, and (Err) the squared error sum in order
// i = 0..15. The error term |x| - |q| * d equals the reference's x - decode(q) * d up to its
// sign (q has x's sign), and |q| <= 6 always, so a zero divisor gives the reference's x^2 terms.
// Quotients: kDivide IEEE division; kFast Quotient::near; kSmall the same when every |x / d|
// is below 7, so the codes need no saturation (e2m1_round_small, magnitudes only).
enum class Path { kDivide, kFast, kSmall };
template <bool Err, Path P>
__device__ __forceinline__ float round_block(const float (&x)[16], const Quotient& q, uint2& packed) {
  float e = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float v = P == Path::kDivide ? x[i] / q.d : q.near(x[i]);
    const E2m1Rounded r = P == Path::kSmall ? e2m1_round_small(v) : e2m1_round_fast(v);
    push_code(packed, i, r.code);
    if (Err) {
      const float d = fabsf(x[i]) - r.mag * q.d;
      e = e + d * d;
    }
  }
  return e;
}

// rtn.cpp quantize_block (+ block_sq_error when Err): packed codes against (val_max, t);
// returns the scale code and, through err, the squared error sum. The signs are x's, `signs`
// = sign_nibbles(x): x / d has x's sign for d > 0, and d = 0 makes every code +0.
template <bool Err>
__device__ __forceinline__ uint32_t quantize_block(const float (&x)[16], uint2 signs, float g_max, float val_max,
                                                   float t, uint2& packed, float& err) {
  const uint8_t s = e4m3_encode_fast((g_max / val_max) / t);
  const Quotient q(e4m3_decode_fast(s) * t);
  // IEEE division is monotonic, so |x_i| <= g_max bounds every quotient by g_max's (a tiny
  // inexact near() stays tiny).
  packed = signs;  // shifted out by the codes (pack16's init)
  if (!q.fast)
    err = round_block<Err, Path::kDivide>(x, q, packed);
  else if (q.near(g_max) < 7.0f)
    err = round_block<Err, Path::kSmall>(x, q, packed);
  else
    err = round_block<Err, Path::kFast>(x, q, packed);
  packed = q.d == 0.0f ? uint2{0u, 0u} : with_signs(packed, signs);
  return s;
}

struct Out {
  uint2* packed;
  uint8_t* scales;
  float* tensor_scale;
  FastDiv groups_per_row;
  int64_t tiles_per_row;
  uint4* expanded;  // optional: the unscaled BF16 expansion, 2 x 16 bytes a group
  AlphaLink link;
};

__device__ __forceinline__ void store_group(const Out& o, int64_t gid, uint2 p, uint32_t s) {
  o.packed[gid] = p;
  const uint32_t row = o.groups_per_row.div(static_cast<uint32_t>(gid));
  const uint32_t k = static_cast<uint32_t>(gid) - row * o.groups_per_row.d;
  o.scales[blocked_offset(row, k, o.tiles_per_row)] = static_cast<uint8_t>(s);
}

// Mode 0: RTN (val_max, scale_max); mode 1: Four-over-Six (t = amax / (256 * 6)). T: BF16 or
// float32 input (load8).
template <int Mode, class T>
__global__ void __launch_bounds__(kThreads) rtn_1x16_kernel(const T* __restrict__ x, int64_t groups,
                                                             const float* __restrict__ amax, float val_max,
                                                             float scale_max, Out o) {
  dependent_launch_prologue();
  const ExpandTables tables = expand_tables();
  const float t = tensor_scale(*amax, scale_max, val_max);
  if (blockIdx.x == 0 && threadIdx.x == 0) publish_tensor_scale(t, o.tensor_scale, o.link);
  for_each_group(x, groups, [&](int64_t gid, bool valid, const float (&v)[16]) {
    const float g_max = group_amax(v);
    const uint2 signs = sign_nibbles(v);
    uint2 p;
    float e6;
    uint32_t s = quantize_block<Mode == 1>(v, signs, g_max, val_max, t, p, e6);
    if (Mode == 1) {
      uint2 p4;
      float e4;
      const uint32_t s4 = quantize_block<true>(v, signs, g_max, 4.0f, t, p4, e4);
      if (e4 < e6) {
        s = s4;
        p = p4;
      }
    }
    if (valid) store_group(o, gid, p, s);
    if (o.expanded) store_expansion(o.expanded, gid - (threadIdx.x & 31), groups, p, s, tables);
  });
}

constexpr int kTileRows = 16, kTileGroups = 32, kSquareThreads = kTileRows * kTileGroups;

template <class T>
__global__ void __launch_bounds__(kSquareThreads) rtn_16x16_kernel(const T* __restrict__ x, int64_t rows,
                                                                    int64_t groups_per_row,
                                                                    const float* __restrict__ amax, float scale_max,
                                                                    Out o) {
  dependent_launch_prologue();
  // Double-buffered tile maxima: one barrier per tile. The next tile's input is loaded
  // before the current one is reduced and quantized.
  __shared__ float s_max[2][kTileRows][kTileGroups];
  const float t = tensor_scale(*amax, scale_max, 6.0f);
  if (blockIdx.x == 0 && threadIdx.x == 0) publish_tensor_scale(t, o.tensor_scale, o.link);
  const int w = threadIdx.x / kTileGroups, lane = threadIdx.x % kTileGroups;
  const int64_t tiles_c = (groups_per_row + kTileGroups - 1) / kTileGroups, tiles = rows / kTileRows * tiles_c;
  auto gid_of = [&](int64_t tile, bool& valid) {
    const int64_t k = tile % tiles_c * kTileGroups + lane;
    valid = tile < tiles && k < groups_per_row;
    return (tile / tiles_c * kTileRows + w) * groups_per_row + k;
  };
  bool valid;
  int64_t gid = gid_of(blockIdx.x, valid);
  uint4 a0{}, a1{};
  if (valid) {
    a0 = load8(x, 2 * gid);
    a1 = load8(x, 2 * gid + 1);
  }
  int buf = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    bool next_valid;
    const int64_t next = gid_of(tile + gridDim.x, next_valid);
    uint4 b0{}, b1{};
    if (next_valid) {
      b0 = load8(x, 2 * next);
      b1 = load8(x, 2 * next + 1);
    }
    float v[16];
    unpack16(a0, a1, v);
    s_max[buf][w][lane] = group_amax(v);  // zeros when !valid
    __syncthreads();
    float g_max = 0.0f;
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) g_max = ref_max(g_max, s_max[buf][r][lane]);
    if (valid) {
      uint2 p;
      float unused;
      const uint32_t s = quantize_block<false>(v, sign_nibbles(v), g_max, 6.0f, t, p, unused);
      store_group(o, gid, p, s);
    }
    gid = next;
    valid = next_valid;
    a0 = b0;
    a1 = b1;
    buf ^= 1;
  }
}

Out make_out(DeviceNVFP4& out, __nv_bfloat16* expanded, AlphaLink link) {
  require(reinterpret_cast<uintptr_t>(expanded) % 16 == 0, "BF16 expansion", "device pointer is not 16-byte aligned");
  const int64_t g = out.scale_cols();
  return Out{reinterpret_cast<uint2*>(out.packed.get()), out.scales.get(), out.tensor_scale.get(),
             FastDiv(static_cast<uint32_t>(g)), (g + 3) / 4, reinterpret_cast<uint4*>(expanded), link};
}

template <class View>
void check_input(const View& x) {
  require_input(x, kBlock, "NVFP4 blocks are 16 elements along a row");
}

template <int Mode, class View>
void launch_1x16(const View& x, const float* amax, float val_max, float scale_max, DeviceNVFP4& out,
                 cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  check_input(x);
  out.ensure(x.rows, x.cols);
  const int64_t groups = x.rows * x.cols / kBlock;
  const auto kernel = rtn_1x16_kernel<Mode, element_t<View>>;
  const int blocks =
      persistent_blocks(reinterpret_cast<const void*>(kernel), kThreads, 0, (groups + kThreads - 1) / kThreads);
  launch_dependent(Mode == 0 ? "rtn_1x16_kernel" : "four_over_six_1x16_kernel", kernel, blocks, kThreads, stream,
                   x.data, groups, amax, val_max, scale_max, make_out(out, expanded, link));
}

template <class View>
void launch_16x16(const View& x, const float* amax, float scale_max, DeviceNVFP4& out, cudaStream_t stream,
                  AlphaLink link) {
  check_input(x);
  require(x.rows % 16 == 0, x.name, std::to_string(x.rows) + " rows is not a multiple of 16 (16x16 square blocks)");
  out.ensure(x.rows, x.cols);
  const int64_t g = x.cols / kBlock;
  const int64_t tiles = x.rows / 16 * ((g + kTileGroups - 1) / kTileGroups);
  const auto kernel = rtn_16x16_kernel<element_t<View>>;
  const int blocks = persistent_blocks(reinterpret_cast<const void*>(kernel), kSquareThreads, 0, tiles);
  launch_dependent("rtn_16x16_kernel", kernel, blocks, kSquareThreads, stream, x.data, x.rows, g, amax, scale_max,
                   make_out(out, nullptr, link));
}

}  // namespace
}  // namespace detail

void quantize_rtn_async(const BF16View& x, const float* amax, const quant::RtnConfig& cfg, DeviceNVFP4& out,
                        cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  detail::launch_1x16<0>(x, amax, cfg.val_max, cfg.scale_max, out, stream, expanded, link);
}

void quantize_rtn_async(const F32View& x, const float* amax, const quant::RtnConfig& cfg, DeviceNVFP4& out,
                        cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link) {
  detail::launch_1x16<0>(x, amax, cfg.val_max, cfg.scale_max, out, stream, expanded, link);
}

void quantize_four_over_six_async(const BF16View& x, const float* amax, DeviceNVFP4& out, cudaStream_t stream,
                                  __nv_bfloat16* expanded, AlphaLink link) {
  detail::launch_1x16<1>(x, amax, 6.0f, 256.0f, out, stream, expanded, link);
}

void quantize_four_over_six_async(const F32View& x, const float* amax, DeviceNVFP4& out, cudaStream_t stream,
                                  __nv_bfloat16* expanded, AlphaLink link) {
  detail::launch_1x16<1>(x, amax, 6.0f, 256.0f, out, stream, expanded, link);
}

void quantize_rtn_16x16_async(const BF16View& x, const float* amax, float scale_max, DeviceNVFP4& out,
                              cudaStream_t stream, AlphaLink link) {
  detail::launch_16x16(x, amax, scale_max, out, stream, link);
}

void quantize_rtn_16x16_async(const F32View& x, const float* amax, float scale_max, DeviceNVFP4& out,
                              cudaStream_t stream, AlphaLink link) {
  detail::launch_16x16(x, amax, scale_max, out, stream, link);
}

void quantize_rtn(const BF16View& x, const quant::RtnConfig& cfg, DeviceNVFP4& out, Workspace& ws,
                  cudaStream_t stream) {
  amax_async(x, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
  quantize_rtn_async(x, ws.amax(), cfg, out, stream);
}

void quantize_four_over_six(const BF16View& x, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream) {
  amax_async(x, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
  quantize_four_over_six_async(x, ws.amax(), out, stream);
}

void quantize_rtn_16x16(const BF16View& x, float scale_max, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream) {
  amax_async(x, ws, stream);
  ws.throw_if_nonfinite(x.name, stream);
  quantize_rtn_16x16_async(x, ws.amax(), scale_max, out, stream);
}

}  // namespace q2::cuda
