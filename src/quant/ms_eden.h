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
#include <cstdint>

#include "common/matrix.h"
#include "format/nvfp4.h"
#include "quant/hadamard.h"

namespace q2::quant {

constexpr float kMsEdenValMax = static_cast<float>(6.0 / ((17.0 / 16.0) * 0.93));

enum class EdenGroup { k16, kChunk };
enum class EdenTensorScale { kPostHoc, kRotatedAmax };

struct MsEdenConfig {
  EdenGroup group = EdenGroup::k16;
  EdenTensorScale tensor_scale = EdenTensorScale::kPostHoc;
};

// Quantizes RHT(x) (rotation r along rows); the result stays in the rotated basis, as both
// GEMM operands are rotated alike and the rotation cancels in the product.
NVFP4Tensor quantize_ms_eden(const MatrixRef& x, const Rht& r, uint64_t sr_seed, const MsEdenConfig& cfg = {});

// The EDEN factor S of one 16-group of rotated values y under the default (post-hoc) first
// stage: what pass 1 multiplies into the group's scale (1 for an all-zero group).
float eden_group_factor(const float* y);

}  // namespace q2::quant
