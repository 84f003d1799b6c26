#pragma once
// MS-EDEN (Quartet II's unbiased backward quantizer), post-hoc range alignment by default:
//
// Pass 1, per row, per Hadamard chunk and per 16-element group g of y = RHT(x):
//   m_g = RTZ_E8M4(g_max / s)          s = 6 / ((17/16) * 0.93): the first-stage scale
//   v_i = y_i * (1 / m_g),  q_i = RNE_E2M1(v_i)     (m_g = 0 gives v = 0, q = 0)
//   S   = sum v_i^2 / sum v_i q_i      (S = 1 when the denominator is 0; sums in order)
//   c_g = m_g * S                      the EDEN-corrected scale, kept in float32
// Pass 2: t = max_g c_g / 256 (the post-hoc tensor scale; 0 for an all-zero tensor) and
//   s8_g = SR_E4M3(c_g / t) with Philox word (sr_seed, kScaleSR, row * cols/16 + g).
// The codes are never stochastically rounded: E[q * s8 * t] = S * q * m = EDEN's estimate.
//
// Options (spec's research variant): the correction factor S per Hadamard chunk instead of
// per 16; the tensor scale from the rotated amax, t = amax / (255.99 * s), with the first
// stage m_g = RN_E4M3((g_max / s) / t) * t.
//
// Option eden_fallback = tau (0: off): EDEN is unbiased only as the chunk grows, and a chunk
// whose energy sits in one element rotates to nearly equal magnitudes, whose rounding error no
// scalar S removes (spec §5.8). A chunk whose outlier share (below, before the rotation) exceeds
// tau is therefore rounded stochastically instead: per group, c_g = g_max / 6 and codes
// SR_E2M1((y_i / g_max) * 6), element (row, col) drawing Philox word (sr_seed, kElementSR,
// row * cols + col). |v| <= 6, so SR never clips; pass 2 is unchanged, and its SR of c_g / t is
// independent of the codes' coins, so E[q * s8 * t] = y for every rotation. The decision depends
// on x alone, never on the rotation, so the other chunks keep EDEN's expectation; their codes
// and c_g are plain MS-EDEN's bit for bit (their scales too while t, the tensor's largest c_g /
// 256, is unchanged).
#include <cstdint>

#include "common/host_device.h"
#include "common/matrix.h"
#include "format/e2m1.h"
#include "format/nvfp4.h"
#include "quant/hadamard.h"
#include "quant/philox.h"

namespace q2::quant {

constexpr float kMsEdenValMax = static_cast<float>(6.0 / ((17.0 / 16.0) * 0.93));

enum class EdenGroup { k16, kChunk };
enum class EdenTensorScale { kPostHoc, kRotatedAmax };

struct MsEdenConfig {
  EdenGroup group = EdenGroup::k16;
  EdenTensorScale tensor_scale = EdenTensorScale::kPostHoc;
  double eden_fallback = 0;  // > 0: SR for chunks whose outlier share exceeds it; in [0, 1)
};

// 0 (off) or a share in (0, 1): shares lie in [1/n, 1].
inline bool valid_eden_fallback(double tau) { return tau >= 0 && tau < 1; }

// Quantizes RHT(x) (rotation r along rows); the result stays in the rotated basis, as both
// GEMM operands are rotated alike and the rotation cancels in the product.
NVFP4Tensor quantize_ms_eden(const MatrixRef& x, const Rht& r, uint64_t sr_seed, const MsEdenConfig& cfg = {});

// The EDEN factor S of one 16-group of rotated values y under the default (post-hoc) first
// stage: what pass 1 multiplies into the group's scale (1 for an all-zero group).
float eden_group_factor(const float* y);

// The outlier share of a chunk before the rotation, max x_i^2 / sum x_i^2, in float64 (each
// square is exact) in one fixed order that the GPU's lanes reproduce: per 16-group the sum in
// order i = 0..15, then the groups' sums pairwise ((g0 + g1) + (g2 + g3)) + ... .
struct ChunkEnergy {
  double top = 0, sum = 0;
};
Q2_HD ChunkEnergy group_energy(const float* x) {
  ChunkEnergy e;
  for (int i = 0; i < 16; ++i) {
    const double v = static_cast<double>(x[i]) * static_cast<double>(x[i]);
    e.sum = e.sum + v;
    e.top = e.top < v ? v : e.top;
  }
  return e;
}
// Commutative bit for bit, so either lane of a pair may form it.
Q2_HD ChunkEnergy combine(const ChunkEnergy& a, const ChunkEnergy& b) {
  return {a.top < b.top ? b.top : a.top, a.sum + b.sum};
}
// 0 for an all-zero chunk.
Q2_HD double outlier_share(const ChunkEnergy& e) { return e.sum > 0 ? e.top / e.sum : 0.0; }
Q2_HD bool eden_falls_back(const ChunkEnergy& e, double eden_fallback) {
  return eden_fallback > 0 && outlier_share(e) > eden_fallback;
}
// The groups' energies e[0..groups) (groups a power of two) combined as above, in place.
Q2_HD ChunkEnergy combine_groups(ChunkEnergy* e, int groups) {
  for (int w = 1; w < groups; w *= 2)
    for (int g = 0; g < groups; g += 2 * w) e[g] = combine(e[g], e[g + w]);
  return e[0];
}
// The chunk of n elements (n / 16 a power of two) combined as above.
ChunkEnergy chunk_energy(const float* x, int n);

// The fallback's stochastic rounding of one rotated 16-group y whose first element has index
// `first` (row * cols + col, a multiple of 16): its codes (unpacked), and the scale c_g =
// g_max / 6 it returns (0, with +0 codes, for an all-zero group).
Q2_HD float eden_fallback_group(const float* y, uint64_t sr_seed, uint64_t first, uint8_t* codes) {
  float g_max = 0.0f;
  for (int i = 0; i < 16; ++i) {
    const float a = bits_float(float_bits(y[i]) & 0x7FFFFFFFu);
    g_max = g_max < a ? a : g_max;
  }
  for (int i = 0; i < 16; i += 4) {
    const philox::Block w = philox::words4(sr_seed, philox::kElementSR, (first + i) >> 2);
    for (int j = 0; j < 4; ++j)
      codes[i + j] = g_max == 0.0f ? 0 : e2m1::encode_sr((y[i + j] / g_max) * e2m1::kMax, w.v[j]);
  }
  return g_max / e2m1::kMax;
}

}  // namespace q2::quant
