// Device-side helpers for fast_codec_test.cpp (declared in test_support.h): exhaustive checks of
// fast_codec.h and of the unscaled BF16 expansion (device_common.cuh) on the GPU against the
// reference codecs (format/e2m1.h) and IEEE division.
#include <cuda_runtime.h>

#include "cuda/quant/device_common.cuh"
#include "cuda/quant/fast_codec.h"
#include "cuda/quant/quant.h"
#include "format/bf16.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/philox.h"

namespace q2::cuda::testing {
namespace {

struct Tally {
  unsigned long long* count;
  uint32_t* first;
  __device__ void fail(uint32_t what) {
    atomicAdd(count, 1ull);
    atomicMin(first, what);
  }
};

// Every finite float: codes and magnitudes of e2m1_round_fast (and e2m1_round_small below 7);
// e2m1_sr_fast with three random words and with the two words on either side of the
// reference's decision threshold (u < p flips between n0 - 1 and n0 = ceil(p * 2^24), so
// agreement there is agreement for every word).
__global__ void e2m1_codec_kernel(Tally t) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (1ull << 32); i += stride) {
    const float v = __uint_as_float(static_cast<uint32_t>(i));
    if (v != v) continue;
    const E2m1Rounded f = e2m1_round_fast(v);
    const uint8_t ref = e2m1::encode_rne(v);
    bool ok = f.code == ref && __float_as_uint(f.mag) == __float_as_uint(fabsf(e2m1::decode(ref)));
    if (fabsf(v) < 7.0f) {  // e2m1_round_small's domain
      const E2m1Rounded m = e2m1_round_small(v);  // the kernels pass signed values
      ok = ok && (m.code | (ref & 8u)) == ref && __float_as_uint(m.mag) == __float_as_uint(f.mag);
    }

    const float a = fabsf(v);
    uint32_t words[5] = {philox::word(7, philox::kData, i), 0u, 0xFFFFFFFFu, 0u, 0u};
    int n_words = 3;
    if (a < 6.0f) {  // the reference's probability, as e2m1::encode_sr forms it
      uint8_t lo = 0;
      while (lo < 6 && e2m1::decode(static_cast<uint8_t>(lo + 1)) <= a) ++lo;
      const float lo_v = e2m1::decode(lo), step = e2m1::decode(static_cast<uint8_t>(lo + 1)) - lo_v;
      const double n0 = ceil(static_cast<double>((a - lo_v) / step) * 0x1p24);
      if (n0 >= 1.0 && n0 <= 0x1p24) words[n_words++] = (static_cast<uint32_t>(n0) - 1u) << 8;
      if (n0 < 0x1p24) words[n_words++] = static_cast<uint32_t>(n0) << 8;
    }
    for (int w = 0; w < n_words; ++w) ok = ok && e2m1_sr_fast(v, words[w]) == e2m1::encode_sr(v, words[w]);
    if (!ok) t.fail(static_cast<uint32_t>(i));
  }
}

// Every BF16 x against 2^14 divisors d spread over [2^-110, 2^110] (random mantissas), where
// |x / d| < 2^64 (Quotient's precondition) and d is in the fast range: near(x) equals IEEE
// x / d bit for bit where exact_for(x), and gives the reference's RTN code everywhere.
// Failures are recorded as the divisor index.
__global__ void quotient_kernel(Tally t) {
  const uint64_t total = 1ull << 30, stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const uint32_t di = static_cast<uint32_t>(i >> 16);
    const float x = bf16::decode(static_cast<uint16_t>(i & 0xFFFFu));
    if (x != x || !is_finite(x)) continue;
    const uint32_t r = philox::word(11, philox::kData, di);
    const float d = ldexpf(1.0f + static_cast<float>(r >> 9) * 0x1p-23f, static_cast<int>(di % 221) - 110);
    const Quotient q(d);
    const float ieee = x / d;
    if (!q.fast || !(fabsf(ieee) < 0x1p64f)) continue;
    const float near = q.near(x);
    const bool ok = (!q.exact_for(x) || __float_as_uint(near) == __float_as_uint(ieee)) &&
                    e2m1::encode_rne(near) == e2m1::encode_rne(ieee);
    if (!ok) t.fail(di);
  }
}

// Every float through e4m3_encode_fast (NaN excluded: kernels never scale NaN) and every
// code through e4m3_decode_fast, against the reference.
__global__ void e4m3_codec_kernel(Tally t) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (1ull << 32); i += stride) {
    const float v = __uint_as_float(static_cast<uint32_t>(i));
    bool ok = v != v || e4m3_encode_fast(v) == e4m3::encode_rne(v);
    if (i < 256) {
      const float a = e4m3_decode_fast(static_cast<uint8_t>(i)), b = e4m3::decode(static_cast<uint8_t>(i));
      ok = ok && (__float_as_uint(a) == __float_as_uint(b) || (a != a && b != b));
    }
    if (!ok) t.fail(static_cast<uint32_t>(i));
  }
}

// e4m3_sr_fast over its domain, every float with the sign bit clear (NaN skipped) and -0
// (i = 2^31), with three random words and the two words on either side of the reference's
// decision threshold, as for e2m1_sr_fast.
__global__ void e4m3_sr_kernel(Tally t) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i <= (1ull << 31); i += stride) {
    const float a = __uint_as_float(static_cast<uint32_t>(i));
    if (a != a) continue;
    uint32_t words[5] = {philox::word(13, philox::kData, i), 0u, 0xFFFFFFFFu, 0u, 0u};
    int n_words = 3;
    if (a < e4m3::kMax) {  // the reference's probability, as e4m3::encode_sr forms it
      const uint8_t lo = e4m3::encode_magnitude_rtz(a);
      const float lo_v = e4m3::decode(lo), step = e4m3::decode(static_cast<uint8_t>(lo + 1)) - lo_v;
      const double n0 = ceil(static_cast<double>((a - lo_v) / step) * 0x1p24);
      if (n0 >= 1.0 && n0 <= 0x1p24) words[n_words++] = (static_cast<uint32_t>(n0) - 1u) << 8;
      if (n0 < 0x1p24) words[n_words++] = static_cast<uint32_t>(n0) << 8;
    }
    bool ok = true;
    for (int w = 0; w < n_words; ++w) ok = ok && e4m3_sr_fast(a, words[w]) == e4m3::encode_sr(a, words[w]);
    if (!ok) t.fail(static_cast<uint32_t>(i));
  }
}

// expand8_unscaled with expand_scale against e2m1::decode(code) * e4m3::decode(scale), rounded
// by bf16::encode: every non-NaN scale code in every byte of the scale word (the other bytes
// random), with 16 code words that hold every code at every position. Failures are recorded as
// scale << 6 | byte << 4 | word.
__global__ void expansion_kernel(Tally t) {
  const detail::ExpandTables tables = detail::expand_tables();  // by every lane, before any returns
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x, sc = i >> 6, b = (i >> 4) & 3u, r = i & 15u;
  if (sc > 255u || e4m3::is_nan_code(static_cast<uint8_t>(sc))) return;
  uint32_t p = 0;
  for (uint32_t k = 0; k < 8; ++k) p |= ((r + 3u * k) & 15u) << (4 * k);
  const uint32_t w = (philox::word(17, philox::kData, i) & ~(0xFFu << (8 * b))) | (sc << (8 * b));
  const uint4 o = detail::expand8_unscaled(p, detail::expand_scale(w, detail::scale_byte_sel(b)), tables);
  const uint32_t got[4] = {o.x, o.y, o.z, o.w};
  const float s = e4m3::decode(static_cast<uint8_t>(sc));
  bool ok = true;
  for (uint32_t k = 0; k < 8; ++k) {
    const uint16_t ref = bf16::encode(e2m1::decode(static_cast<uint8_t>((p >> (4 * k)) & 15u)) * s);
    ok = ok && static_cast<uint16_t>(got[k / 2] >> (16 * (k % 2))) == ref;
  }
  if (!ok) t.fail(i);
}

template <class Kernel>
unsigned long long run(Kernel kernel, uint32_t* first_bad) {
  DeviceBuffer<unsigned long long> count(1);
  DeviceBuffer<uint32_t> first(1);
  check(cudaMemset(count.get(), 0, sizeof(unsigned long long)), "cudaMemset");
  check(cudaMemset(first.get(), 0xFF, sizeof(uint32_t)), "cudaMemset");
  kernel<<<4096, 256>>>(Tally{count.get(), first.get()});
  check_launch("fast codec check");
  unsigned long long n = 0;
  check(cudaMemcpy(&n, count.get(), sizeof n, cudaMemcpyDeviceToHost), "cudaMemcpy");
  check(cudaMemcpy(first_bad, first.get(), sizeof *first_bad, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return n;
}

}  // namespace

// Mismatches of e2m1_round_fast / e2m1_sr_fast over all finite floats (first: float bits).
unsigned long long e2m1_codec_mismatches(uint32_t* first_bad) { return run(e2m1_codec_kernel, first_bad); }

// Mismatches of e4m3_encode_fast over all non-NaN floats and e4m3_decode_fast over all codes.
unsigned long long e4m3_codec_mismatches(uint32_t* first_bad) { return run(e4m3_codec_kernel, first_bad); }

// Mismatches of e4m3_sr_fast over all floats with the sign bit clear and -0 (first: float bits).
unsigned long long e4m3_sr_mismatches(uint32_t* first_bad) { return run(e4m3_sr_kernel, first_bad); }

// Mismatches of Quotient over all BF16 numerators x 2^14 divisors (first: divisor index).
unsigned long long quotient_mismatches(uint32_t* first_bad) { return run(quotient_kernel, first_bad); }

// Mismatches of the unscaled expansion over all codes, positions and non-NaN scale codes (first:
// scale << 6 | scale byte << 4 | code word).
unsigned long long expansion_mismatches(uint32_t* first_bad) { return run(expansion_kernel, first_bad); }

}  // namespace q2::cuda::testing
