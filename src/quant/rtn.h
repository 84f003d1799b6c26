#pragma once
// Round-to-nearest NVFP4 quantization in 1x16 blocks, and Four-over-Six.
//
// RTN with parameters (val_max, scale_max), val_max = 6 / scale_override:
//   t   = amax / (scale_max * val_max)             (t = 1 for an all-zero tensor)
//   s_g = RN_E4M3((g_max / val_max) / t)
//   q_i = RNE_E2M1(x_i / (s_g * t))                 (a block whose scale is 0 gets zero codes)
// Four-over-Six: t = amax / (256 * 6); each block tries val_max 6 and 4 and keeps 4 only if
// its squared error sum_i (x_i - q_i * (s * t))^2, accumulated in order, is strictly lower.
#include "common/matrix.h"
#include "format/nvfp4.h"

namespace q2::quant {

struct RtnConfig {
  float val_max = 6.0f;      // the FP4-domain value a block maximum maps to
  float scale_max = 448.0f;  // E4M3 ceiling the tensor maximum maps to
};

NVFP4Tensor quantize_rtn(const MatrixRef& x, const RtnConfig& cfg = {});
NVFP4Tensor quantize_four_over_six(const MatrixRef& x);

// RTN with one scale per 16x16 tile (NVIDIA's weight recipe): g_max runs over the tile and its
// 16 row blocks share the scale, so the transpose is again a valid 1x16 NVFP4 tensor.
// Needs rows and cols to be multiples of 16. The spec's ceiling for it is 447.99.
constexpr float kSquareBlockScaleMax = 447.99f;
NVFP4Tensor quantize_rtn_16x16(const MatrixRef& x, float scale_max = kSquareBlockScaleMax);

// The tensor decode scale: amax / (scale_max * val_max), or 1 for an all-zero tensor.
float tensor_scale(float amax, float scale_max, float val_max);

}  // namespace q2::quant
