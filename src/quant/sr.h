#pragma once
// Stochastic-rounding NVFP4 quantization in 1x16 blocks (the unbiased baseline):
//   val_max = 6 / scale_override, t = amax / (448 * val_max),
//   s_g = RN_E4M3((g_max / val_max) / t), q_i = SR_E2M1(x_i / (s_g * t)).
// With scale_override = 17/16 no scaled value exceeds 6, so SR never clips and the
// quantizer is exactly unbiased; with 1 the E4M3 rounding can push values past 6 (clipped).
// Element (r, c) draws Philox word (seed, kElementSR, r * cols + c).
#include <cstdint>

#include "common/matrix.h"
#include "format/nvfp4.h"

namespace q2::quant {

constexpr float kSrScaleOverride = 17.0f / 16.0f;

NVFP4Tensor quantize_sr(const MatrixRef& x, float scale_override, uint64_t seed);

}  // namespace q2::quant
