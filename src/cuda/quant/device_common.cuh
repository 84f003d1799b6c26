#pragma once
// Device helpers shared by the quantization kernels (included by the .cu files only).
// Numerics: the kernels call the Q2_HD reference functions (e2m1.h, e4m3.h, bf16.h, philox.h,
// hadamard.h), or fast_codec.h's exhaustively checked equivalent of E2M1 rounding.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "common/error.h"
#include "cuda/quant/fast_codec.h"
#include "cuda/quant/quant.h"
#include "format/bf16.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "quant/philox.h"

namespace q2::cuda::detail {

// Device status words of a Workspace (each of its two sets is 4 uint32).
struct Flags {
  uint32_t amax_bits;  // max |x| as float bits; atomicMax on the bits orders non-negative floats
  uint32_t cmax_bits;  // MS-EDEN: max corrected scale, float bits
  uint32_t nonfinite;  // 1 once a kernel saw NaN or Inf in its input
  uint32_t arrived;    // blocks past grid_barrier (the fused MS-EDEN)
};
inline Flags* flags_of(Workspace& ws) { return static_cast<Flags*>(ws.flags()); }

// The status words of the next quantization on ws: `use` is zeroed; `spare` holds the previous
// quantization's, which the first kernel zeroes (clear_spare) for the one after. Once that
// kernel is launched, ws.next_turn() makes `use` current; a failed launch changes nothing.
struct FlagSet {
  Flags* use;
  Flags* spare;
};
inline FlagSet next_flags(Workspace& ws) { return {static_cast<Flags*>(ws.spare_flags()), flags_of(ws)}; }
__device__ __forceinline__ void clear_spare(Flags* spare) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *spare = Flags{};
}

// Writes a quantizer's tensor scale (one thread), and with a link takes part in its product's
// alpha (quant.h, AlphaLink): t is out before the swap, so the second to swap reads both. The
// product t_0 t_1 is the same float whichever finishes second.
__device__ __forceinline__ void publish_tensor_scale(float t, float* dst, AlphaLink link) {
  *dst = t;
  if (!link.product) return;
  volatile float* ts = link.product->t;
  ts[link.side] = t;
  __threadfence();
  if (atomicExch(&link.product->generation, link.generation) == link.generation) {
    __threadfence();
    link.product->alpha = ts[0] * ts[1];
  }
}

constexpr int kGroup = 16;

// MS-EDEN's stochastic-rounding fallback (quant/ms_eden.h, MsEdenConfig::eden_fallback): the
// threshold (0: off) and the rounding seed of the codes.
struct EdenFallback {
  double tau = 0;
  uint64_t seed = 0;
};

// ---- launch helpers (host) ----

// Blocks for a persistent grid: resident blocks per SM times SMs, at most `needed`.
int persistent_blocks(const void* kernel, int threads, size_t smem, int64_t needed);

// kernel<<<blocks, threads, smem, stream>>>(args...) with one launch attribute set to 1; false
// (the error cleared) when a cooperative launch is too large for what the device holds now.
template <class... Params, class... Args>
bool launch_with(cudaLaunchAttributeID id, const char* name, void (*kernel)(Params...), int blocks, int threads,
                 size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = id;
  if (id == cudaLaunchAttributeCooperative)
    attr.val.cooperative = 1;
  else
    attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) cudaGetLastError();  // a later check_launch must not report this one
  if (e == cudaErrorCooperativeLaunchTooLarge) return false;
  check(e, std::string("launch of ") + name);
  return true;
}

// Launches kernel<<<blocks, threads, 0, stream>>>(args...) as a programmatic dependent launch
// (sm_90+): its blocks may be dispatched while the stream's previous kernel drains, sparing the
// launch latency between the two. The kernel must begin with dependent_launch_prologue().
template <class... Params, class... Args>
void launch_dependent(const char* name, void (*kernel)(Params...), int blocks, int threads, cudaStream_t stream,
                      Args&&... args) {
  launch_with(cudaLaunchAttributeProgrammaticStreamSerialization, name, kernel, blocks, threads, 0, stream,
              std::forward<Args>(args)...);  // true: only cooperative launches report a refusal
}

// A cooperative launch: every block is resident at once (blocks at most what the device holds
// with `smem` bytes of shared memory each), so the kernel may wait for all of them. False when
// the device cannot hold them now (nothing launched).
template <class... Params, class... Args>
[[nodiscard]] bool launch_cooperative(const char* name, void (*kernel)(Params...), int blocks, int threads,
                                      size_t smem, cudaStream_t stream, Args&&... args) {
  return launch_with(cudaLaunchAttributeCooperative, name, kernel, blocks, threads, smem, stream,
                     std::forward<Args>(args)...);
}

// First statement of every kernel started by launch_dependent: waits until the previous kernel
// on the stream has finished and its writes are visible (nothing may be read or written
// before), then lets this kernel's own dependent be dispatched.
__device__ __forceinline__ void dependent_launch_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Shape/size validation with messages naming the tensor.
void require(bool ok, const std::string& tensor, const std::string& problem);
// What every NVFP4 quantizer requires of its input: not empty, rows a multiple of
// `row_multiple` long (`why`, when given, says what needs it), 16-byte aligned, fewer than 2^31
// 16-groups. Returns the number of 16-groups.
int64_t require_input(const BF16View& x, int64_t row_multiple, const std::string& why);
int64_t require_input(const F32View& x, int64_t row_multiple, const std::string& why);

// Unsigned 32-bit division by a run-time constant (Granlund-Montgomery), for n < 2^31.
struct FastDiv {
  uint32_t d = 1, m = 0, s = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    while ((1ull << s) < d) ++s;
    m = static_cast<uint32_t>(((1ull << 32) * ((1ull << s) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, m) + n) >> s; }
};

// ---- device helpers ----

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }

// Running per-half maximum of the exponent fields of two packed BF16 values: either half
// reaching 0x7F80 means NaN or Inf.
__device__ __forceinline__ uint32_t exp_max2(uint32_t acc, uint32_t w) { return __vmaxu2(acc, w & 0x7F807F80u); }
__device__ __forceinline__ bool exp_max2_nonfinite(uint32_t acc) {
  return (acc & 0xFFFFu) == 0x7F80u || (acc >> 16) == 0x7F80u;
}

// The CPU reference's running maximum, std::max(m, v) = m < v ? v : m (NaN never wins).
__device__ __forceinline__ float ref_max(float m, float v) { return m < v ? v : m; }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = ref_max(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}

// The element type of a BF16View or F32View.
template <class View>
using element_t = std::remove_const_t<std::remove_pointer_t<decltype(View::data)>>;

// Elements 8i .. 8i+7 of an input as BF16 pairs: BF16 loaded as it is, float32 rounded as
// ops::convert rounds it (so float32 input quantizes exactly like its BF16 copy). Streaming:
// evict-first loads, for data read once.
template <bool Streaming = false>
__device__ __forceinline__ uint4 load8(const __nv_bfloat16* x, int64_t i) {
  const uint4* p = reinterpret_cast<const uint4*>(x) + i;
  return Streaming ? __ldcs(p) : __ldg(p);
}
template <bool Streaming = false>
__device__ __forceinline__ uint4 load8(const float* x, int64_t i) {
  const float4* p = reinterpret_cast<const float4*>(x) + 2 * i;
  const float4 lo = Streaming ? __ldcs(p) : __ldg(p), hi = Streaming ? __ldcs(p + 1) : __ldg(p + 1);
  auto pair = [](float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  };
  return make_uint4(pair(lo.x, lo.y), pair(lo.z, lo.w), pair(hi.x, hi.y), pair(hi.z, hi.w));
}

__device__ __forceinline__ void unpack16(const uint4& a0, const uint4& a1, float (&x)[16]) {
  const uint32_t w[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    x[2 * j] = bf16_lo(w[j]);
    x[2 * j + 1] = bf16_hi(w[j]);
  }
}

// fmaxf(m, a) == ref_max(m, a) here: m is never NaN, and a NaN a leaves m in both.
__device__ __forceinline__ float group_amax(const float (&x)[16]) {
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) m = fmaxf(m, fabsf(x[i]));
  return m;
}

// Persistent grid-stride loop over the 16-groups of a BF16 (or float32, load8) tensor, the
// next group's loads issued before f(gid, valid, values) runs on the current one. The loop is
// warp-uniform (the stride is a multiple of 32), so f may shuffle; lanes past the end get
// valid = false and zeros.
template <class T, class F>
__device__ __forceinline__ void for_each_group(const T* __restrict__ x, int64_t groups, F&& f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int lane = threadIdx.x & 31;
  int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint4 a0{}, a1{};
  if (gid < groups) {
    a0 = load8(x, 2 * gid);
    a1 = load8(x, 2 * gid + 1);
  }
  for (; gid - lane < groups; gid += stride) {
    uint4 b0{}, b1{};
    if (gid + stride < groups) {
      b0 = load8(x, 2 * (gid + stride));
      b1 = load8(x, 2 * (gid + stride) + 1);
    }
    float v[16];
    unpack16(a0, a1, v);
    f(gid, gid < groups, v);
    a0 = b0;
    a1 = b1;
  }
}

// PTX prmt, default mode: bytes of {b, a} (a: bytes 0-3) chosen by the nibbles 0-3 of sel; a
// nibble with bit 3 set gives the chosen byte's sign bit in all 8 bits (__byte_perm does not
// document that).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// prmt selector for expand_scale: byte b, then its sign bit 8 times, in both halves.
__device__ __forceinline__ uint32_t scale_byte_sel(uint32_t b) { return 0x8080u + 0x1111u * b; }

// The scale operand of expand8_unscaled for the E4M3 code in the byte of w that
// sel = scale_byte_sel(b) picks: s * 2^-120 as BF16 in both halves. The code's sign goes to bit
// 15 and its other 7 bits to bits 10..4, where E4M3's exponent (bias 7) reads as BF16's (bias
// 127) and E4M3 subnormals become BF16 subnormals.
__device__ __forceinline__ uint32_t expand_scale(uint32_t w, uint32_t sel) {
  return (prmt(w, 0u, sel) << 4) & 0x87F087F0u;
}

// The BF16 bytes of e2m1 * 2^120, byte i for magnitude code i: low bytes 0xC0804000'C0800000,
// high bytes 0x7C7C7C7C'7B7B7B00. prmt takes one word of each table as an immediate, the other from a
// register; those two come from a shuffle, so that ptxas keeps them in registers instead of
// rebuilding them next to every use (3 to 6 instructions per expand8_unscaled). Every lane of the
// warp must call expand_tables.
struct ExpandTables {
  uint32_t lo, hi;  // entries 0..3
};
__device__ __forceinline__ ExpandTables expand_tables() {
  const uint32_t lane = threadIdx.x & 31;  // lane 0 sends the tables; lane-dependent values keep them opaque
  return {__shfl_sync(0xFFFFFFFFu, 0xC0800000u + lane, 0), __shfl_sync(0xFFFFFFFFu, 0x7B7B7B00u + lane, 0)};
}

// Eight E2M1 codes (element 0 in the low nibble) as BF16 e2m1 * s, the unscaled expansion, with
// s2 = expand_scale(code of s), for every non-NaN scale code (GPU test
// FastCodec.UnscaledExpansion*): e2m1 * s has at most 6 significant bits and
// is zero or in [2^-10, 2688], so one BF16 multiply of e2m1 * 2^120 by s * 2^-120 is exact
// (signed zeros included; BF16 arithmetic keeps subnormals). The low and high bytes of
// e2m1 * 2^120 come from the tables by prmt with the magnitude codes as selectors, 4 elements at
// a time, and two more prmt interleave them; each element's sign is bit 7 of a byte of p (odd
// elements) or of p << 4 (even ones).
__device__ __forceinline__ uint4 expand8_unscaled(uint32_t p, uint32_t s2, const ExpandTables& t) {
  const uint32_t m = p & 0x77777777u, q = p << 4;
  uint32_t w[4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // elements 4h .. 4h + 3
    const uint32_t sel = h ? m >> 16 : m;
    const uint32_t lo = prmt(t.lo, 0xC0804000u, sel);
    const uint32_t hi = prmt(t.hi, 0x7C7C7C7Cu, sel) | (prmt(q, p, h ? 0x7362u : 0x5140u) & 0x80808080u);
    w[2 * h] = prmt(lo, hi, 0x5140u);
    w[2 * h + 1] = prmt(lo, hi, 0x7362u);
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) asm("mul.rn.bf16x2 %0, %0, %1;" : "+r"(w[j]) : "r"(s2));
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Byte offset of scale (row, k) in the cuBLASLt 128x4 blocked layout (scale_layout.cpp).
__device__ __forceinline__ int64_t blocked_offset(int64_t row, int64_t k, int64_t tiles_per_row) {
  return ((row >> 7) * tiles_per_row + (k >> 2)) * 512 + (row & 31) * 16 + ((row >> 5) & 3) * 4 + (k & 3);
}

// Element sources for kernels that read a tensor element by element, down its columns.
// Source S(r, c) = x[r * rs + c * cs] of a BF16 x: (rs, cs) = (x.cols, 1) is x itself,
// (1, x.cols) its transpose.
struct Bf16Source {
  const __nv_bfloat16* x;
  int64_t rs, cs;
  __device__ float operator()(int64_t r, int64_t c) const { return __bfloat162float(x[r * rs + c * cs]); }
};

// Source S(r, c) = the float32 value of an NVFP4 tensor [rows, cols], (e2m1 * e4m3) * t as
// NVFP4Tensor::dequantize.
struct Nvfp4Source {
  const uint8_t* packed;
  const uint8_t* scales;
  const float* t;
  int64_t cols, tiles_per_row;
  __device__ float operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    const uint8_t code = (packed[i >> 1] >> (4 * (i & 1))) & 0xFu;
    return e2m1::decode(code) * e4m3_decode_fast(scales[blocked_offset(r, c >> 4, tiles_per_row)]) * *t;
  }
};

// Tensor scale of the RTN family, identical to quant::tensor_scale (rtn.cpp).
__device__ __forceinline__ float tensor_scale(float amax, float scale_max, float val_max) {
  return amax == 0.0f ? 1.0f : amax / (scale_max * val_max);
}

// Packing of codes 0..15, pushed in this order: afterwards code i is in bits 4i..4i+3 of p.x
// (i < 8) or p.y, whatever p held before. Only the low nibble of c counts: (c << 28) | (p >> 4)
// is one funnel shift.
__device__ __forceinline__ void push_code(uint2& p, int i, uint32_t c) {
  if (i < 8)
    p.x = (c << 28) | (p.x >> 4);
  else
    p.y = (c << 28) | (p.y >> 4);
}

// `init` is shifted out completely. A value the compiler cannot see into (a sign word) keeps the
// first pushes single funnel shifts too; from a known zero it builds them with more instructions.
__device__ __forceinline__ uint2 pack16(const uint32_t (&codes)[16], uint2 init = uint2{0u, 0u}) {
#pragma unroll
  for (int i = 0; i < 16; ++i) push_code(init, i, codes[i]);
  return init;
}

// Bit 4i + 3 of the result is the sign bit of v[i] (.x: i < 8, .y: the rest); the other bits
// are unspecified. One funnel shift each, (s << 4) | (bits >> 28); the intrinsic keeps the
// compiler from splitting it where it knows more about the bits (BF16 values).
__device__ __forceinline__ uint2 sign_nibbles(const float (&v)[16]) {
  uint2 s{0u, 0u};
#pragma unroll
  for (int i = 7; i >= 0; --i) {
    s.x = __funnelshift_l(__float_as_uint(v[i]), s.x, 4);
    s.y = __funnelshift_l(__float_as_uint(v[8 + i]), s.y, 4);
  }
  return s;
}

// Packed magnitude codes (bit 3 of every nibble clear, or already the sign) with signs.
__device__ __forceinline__ uint2 with_signs(uint2 p, uint2 signs) {
  return uint2{p.x | (signs.x & 0x88888888u), p.y | (signs.y & 0x88888888u)};
}

// The 128-point Hadamard transform of a chunk spread over 8 lanes: lane bits 0..2 = g, the
// lane holding elements 16g .. 16g+15 in y (signs already applied). Stages h = 1, 2, 4, 8 run
// inside the thread with the reference fwht(); h = 16, 32, 64 pair element j of group g with
// element j of group g ^ (h/16), lanes xor 1, 2, 4: the lower lane forms a + b, the upper
// a - b, written as fma(own, +-1, partner), whose product is exact, so each output is the
// same single rounding as the CPU's. Then the 1/sqrt(128) multiplication.
__device__ __forceinline__ void rht128_spread8(float (&y)[16], int lane) {
  q2::quant::fwht(y, 16);
#pragma unroll
  for (int s = 0; s < 3; ++s) {
    const float sgn = (lane >> s) & 1 ? -1.0f : 1.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const float other = __shfl_xor_sync(0xFFFFFFFFu, y[i], 1 << s);
      y[i] = __fmaf_rn(y[i], sgn, other);
    }
  }
  const float norm = q2::quant::rht_norm(128);
#pragma unroll
  for (int i = 0; i < 16; ++i) y[i] = y[i] * norm;
}

// MS-EDEN pass 1 for one rotated 16-group y (ms_eden.cpp: round_group, eden_factor): codes
// against m = RTZ_E8M4(g_max / s), sums in order i = 0..15; returns c = m * S. For m >= 2^-120
// (m/(g_max/s) > 1 - 2^-4, so |v| < 6.5) the codes need no saturation: e2m1_round_small, whose
// magnitude codes get their signs from v's sign bits.
template <bool Small>
__device__ __forceinline__ uint2 eden_codes(const float (&y)[16], float f, float& vv, float& vq) {
  float v[16];
  uint32_t codes[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    v[i] = y[i] * f;
    const E2m1Rounded q = Small ? e2m1_round_small(v[i]) : e2m1_round_fast(v[i]);
    codes[i] = q.code;
    vv = vv + v[i] * v[i];
    vq = vq + fabsf(v[i]) * q.mag;  // == v * e2m1::decode(code): same magnitudes, both >= 0
  }
  if (!Small) return pack16(codes);
  const uint2 signs = sign_nibbles(v);
  return with_signs(pack16(codes, signs), signs);
}

__device__ __forceinline__ float eden_group(const float (&y)[16], uint2& packed) {
  const float g_max = group_amax(y);
  const float m = q2::e4m3::round_e8m4_rtz(g_max / q2::quant::kMsEdenValMax);
  if (m == 0.0f) {
    packed = uint2{0u, 0u};
    return 0.0f;
  }
  const float f = 1.0f / m;
  float vv = 0.0f, vq = 0.0f;
  packed = m >= 0x1p-120f ? eden_codes<true>(y, f, vv, vq) : eden_codes<false>(y, f, vv, vq);
  const float S = vq == 0.0f ? 1.0f : vv / vq;
  return m * S;
}

// Whether the 128-chunk held by the 8 lanes xor 1, 2, 4 (lane bits 0..2 = its group g) falls
// back, from this lane's group x before the rotation: quant::chunk_energy's pairwise order,
// ((g0 + g1) + (g2 + g3)) + ..., which the xor butterfly forms on every lane alike (each
// combine is commutative bit for bit). Every lane of the warp must call it.
__device__ __forceinline__ bool eden_falls_back8(const float (&x)[16], double tau) {
  q2::quant::ChunkEnergy e = q2::quant::group_energy(x);
#pragma unroll
  for (int s = 1; s < 8; s <<= 1)
    e = q2::quant::combine(e, {__shfl_xor_sync(0xFFFFFFFFu, e.top, s), __shfl_xor_sync(0xFFFFFFFFu, e.sum, s)});
  return q2::quant::eden_falls_back(e, tau);
}

// MS-EDEN pass 1 of one rotated 16-group y whose elements are numbered from `first` (row * cols
// + col of the output): eden_group, or where its chunk falls back (`sr`, from eden_falls_back8
// before the rotation) quant::eden_fallback_group. Returns c.
__device__ __forceinline__ float eden_or_fallback_group(const float (&y)[16], bool sr, const EdenFallback& fb,
                                                        int64_t first, uint2& packed) {
  if (!sr) return eden_group(y, packed);
  uint8_t codes[16];
  const float c = q2::quant::eden_fallback_group(y, fb.seed, static_cast<uint64_t>(first), codes);
  uint32_t wide[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) wide[i] = codes[i];
  packed = pack16(wide);
  return c;
}

// 8 elements of a BF16 expansion, stored evict-first: the GEMM reads an expansion once, and its
// 2 bytes an element would otherwise push out of L2 the inputs that the next quantizer reads
// again (X after its amax, dY for dY^T).
__device__ __forceinline__ void store_expanded(uint4* p, uint4 v) { __stcs(p, v); }

// The unscaled BF16 expansion (as dequantize_unscaled_async: tensor scale 1) of the warp's 32
// consecutive groups from `first` on, in 16-byte stores that cover 512 contiguous bytes each:
// in round j lane l expands half l % 2 of the group of lane 16j + l / 2. Every lane of the warp
// must call it.
__device__ __forceinline__ void store_expansion(uint4* expanded, int64_t first, int64_t groups, uint2 p, uint32_t s,
                                                const ExpandTables& tables) {
  const int lane = threadIdx.x & 31;
  const uint32_t s2 = expand_scale(s, scale_byte_sel(0));
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int src = 16 * j + lane / 2;
    const uint32_t lo = __shfl_sync(0xFFFFFFFFu, p.x, src), hi = __shfl_sync(0xFFFFFFFFu, p.y, src);
    const uint32_t sj = __shfl_sync(0xFFFFFFFFu, s2, src);
    if (first + src < groups)
      store_expanded(expanded + 2 * first + 32 * j + lane, expand8_unscaled(lane & 1 ? hi : lo, sj, tables));
  }
}

// Sign masks for the 16 elements 16g .. 16g+15 of a 128-chunk: bit i of the result is sign
// (16g + i) of the rotation (1 means -1).
__device__ __forceinline__ uint32_t group_sign_bits(const uint4& signs, int g) {
  const int k = g >> 1;  // selects, not a run-time array index (which would go to local memory)
  const uint32_t w = k == 0 ? signs.x : k == 1 ? signs.y : k == 2 ? signs.z : signs.w;
  return (w >> (16 * (g & 1))) & 0xFFFFu;
}

// The sign bits of an MS-EDEN rotation as kernel arguments (EdenRotation): `in` flips the input
// (the first rotation's signs); with two rounds, the chunk is then rotated, flipped by `then`
// (the second's) and rotated again.
struct EdenSigns {
  uint4 in;
  uint4 then;
};

// With two rounds (Twice), the first: the chunk, flipped by its first signs, rotated and flipped
// by the second's, `sb` (its group's bits; x * -1 is exact, as the CPU's x * sign). A template
// argument, so that the one-round kernels stay as they were (a run-time flag cost them registers).
template <bool Twice>
__device__ __forceinline__ void first_round(float (&y)[16], int lane, uint32_t sb) {
  if constexpr (Twice) {
    rht128_spread8(y, lane);
#pragma unroll
    for (int i = 0; i < 16; ++i) y[i] = (sb >> i) & 1u ? -y[i] : y[i];
  }
}

// Block-wide reduction of the per-thread corrected-scale maximum and NaN/Inf flag, then one
// atomic per block; also clears the spare status words. blockDim.x must be a multiple of 32
// and at most 1024.
__device__ __forceinline__ void publish_cmax(float cmax, bool bad, const FlagSet& flags) {
  clear_spare(flags.spare);
  __shared__ float s_max[32];
  __shared__ int s_bad;
  if (threadIdx.x == 0) s_bad = 0;
  cmax = warp_max(cmax);
  bad = __any_sync(0xFFFFFFFFu, bad);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    s_max[threadIdx.x >> 5] = cmax;
    if (bad) s_bad = 1;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? s_max[threadIdx.x] : 0.0f;
    v = warp_max(v);
    if (threadIdx.x == 0) {
      if (v > 0.0f) atomicMax(&flags.use->cmax_bits, __float_as_uint(v));
      if (s_bad) flags.use->nonfinite = 1u;
    }
  }
}

// The rotation's 128 sign bits as a kernel argument.
inline uint4 sign_words(const quant::Rht& r) {
  return make_uint4(r.sign_bits[0], r.sign_bits[1], r.sign_bits[2], r.sign_bits[3]);
}
inline EdenSigns eden_signs(const EdenRotation& r) {
  return EdenSigns{sign_words(r.twice ? r.first : r.r), sign_words(r.r)};
}
// Pass 2 of MS-EDEN, shared by the three pass-1 kernels (ms_eden.cu); with `expanded`, also
// the unscaled BF16 expansion of out.
void launch_eden_scales(const float* corrected, int64_t rows, int64_t cols, uint64_t sr_seed, Flags* flags,
                        DeviceNVFP4& out, cudaStream_t stream, __nv_bfloat16* expanded, AlphaLink link);
// Validates an MS-EDEN quantization's rotation (128 points, both with two rounds) and fallback
// threshold (quant::valid_eden_fallback), which two rounds do not take (no kernels), and
// returns the fallback's kernel argument.
EdenFallback eden_setup(const EdenRotation& r, double tau, uint64_t sr_seed, const std::string& tensor);

}  // namespace q2::cuda::detail

namespace q2::cuda::detail {

// 16-byte asynchronous global -> shared copy; src_bytes = 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Shared-memory tile of 128 rows x 32 words (128 bytes a row). Word w of row r is stored at
// w ^ (4 * ((r / 16) % 8)): 16-byte chunks stay contiguous (cp.async), and the 8 lanes that
// read one word column in rows 16g + i (g = 0..7) hit 8 different bank quads.
__device__ __forceinline__ int swizzled_word(int row, int word) { return row * 32 + (word ^ (((row >> 4) & 7) << 2)); }

// Rows [0, 128) x bytes [byte0, byte0 + 128) of a row-major byte matrix (`stride` bytes a row)
// into a swizzled tile, one 16-byte cp.async per chunk from 256 threads; chunks at or past
// `row_bytes` are zero-filled.
__device__ __forceinline__ void load_tile_128x128(uint32_t* tile, const uint8_t* src, int64_t stride, int64_t byte0,
                                                  int64_t row_bytes) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int q = threadIdx.x + 256 * k, row = q >> 3, ch = q & 7;
    const int64_t byte = byte0 + ch * 16;
    const bool in = byte < row_bytes;
    cp_async16(&tile[swizzled_word(row, ch * 4)], in ? src + row * stride + byte : src, in ? 16 : 0);
  }
}

// A persistent block's tiles t = blockIdx.x, + gridDim.x, ... < tiles, double-buffered:
// issue(t, stage) starts tile t's copies into buffer `stage` (0 or 1) while body(t, stage)
// works on the previous tile, which has landed for every thread; a buffer is refilled only
// after every thread has left the body that read it.
template <class Issue, class Body>
__device__ __forceinline__ void for_each_tile_double_buffered(int64_t tiles, Issue&& issue, Body&& body) {
  int stage = 0;
  if (blockIdx.x < tiles) issue(static_cast<int64_t>(blockIdx.x), 0);
  cp_async_commit();
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    if (t + gridDim.x < tiles) issue(t + gridDim.x, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    body(t, stage);
    __syncthreads();
    stage ^= 1;
  }
}

// The two transposed MS-EDEN groups of a column pair (output rows c and c + 1, group o and o +
// out_row_groups): codes, corrected scales, and the running maximum of the corrected scales.
__device__ __forceinline__ void store_column_pair(uint2* packed, float* corrected, int64_t o, int64_t out_row_groups,
                                                  uint2 plo, float clo, uint2 phi, float chi, float& cmax) {
  packed[o] = plo;
  corrected[o] = clo;
  packed[o + out_row_groups] = phi;
  corrected[o + out_row_groups] = chi;
  cmax = ref_max(ref_max(cmax, clo), chi);
}

}  // namespace q2::cuda::detail
