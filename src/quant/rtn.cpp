#include "quant/rtn.h"

#include <cmath>

#include "common/error.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/checks.h"

namespace q2::quant {

float tensor_scale(float amax, float scale_max, float val_max) {
  return amax == 0.0f ? 1.0f : amax / (scale_max * val_max);
}

namespace {

float group_amax(const float* x) {
  float m = 0.0f;
  for (int i = 0; i < kBlock; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Quantizes one block against (val_max, t); writes codes and returns the scale code.
uint8_t quantize_block(const float* x, float g_max, float val_max, float t, uint8_t* codes) {
  const uint8_t s = e4m3::encode_rne((g_max / val_max) / t);
  const float denom = e4m3::decode(s) * t;
  for (int i = 0; i < kBlock; ++i) codes[i] = denom == 0.0f ? 0 : e2m1::encode_rne(x[i] / denom);
  return s;
}

float block_sq_error(const float* x, const uint8_t* codes, uint8_t s, float t) {
  const float denom = e4m3::decode(s) * t;
  float err = 0.0f;
  for (int i = 0; i < kBlock; ++i) {
    const float d = x[i] - e2m1::decode(codes[i]) * denom;
    err += d * d;
  }
  return err;
}

void store_block(NVFP4Tensor& out, int64_t r, int64_t b, const uint8_t* codes, uint8_t s) {
  out.scale(r, b) = s;
  uint8_t* p = out.packed.data() + (r * out.cols + b * kBlock) / 2;
  for (int i = 0; i < kBlock; i += 2) p[i / 2] = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 4));
}

}  // namespace

NVFP4Tensor quantize_rtn(const MatrixRef& x, const RtnConfig& cfg) {
  check_shape(x, kBlock, "NVFP4 blocks are 16 elements along a row");
  NVFP4Tensor out(x.rows, x.cols);
  out.tensor_scale = tensor_scale(checked_amax(x), cfg.scale_max, cfg.val_max);
  const float t = out.tensor_scale;
#pragma omp parallel for
  for (int64_t r = 0; r < x.rows; ++r) {
    uint8_t codes[kBlock];
    for (int64_t b = 0; b < out.scale_cols(); ++b) {
      const float* g = x.row(r) + b * kBlock;
      store_block(out, r, b, codes, quantize_block(g, group_amax(g), cfg.val_max, t, codes));
    }
  }
  return out;
}

NVFP4Tensor quantize_four_over_six(const MatrixRef& x) {
  check_shape(x, kBlock, "NVFP4 blocks are 16 elements along a row");
  NVFP4Tensor out(x.rows, x.cols);
  out.tensor_scale = tensor_scale(checked_amax(x), 256.0f, 6.0f);
  const float t = out.tensor_scale;
#pragma omp parallel for
  for (int64_t r = 0; r < x.rows; ++r) {
    uint8_t c6[kBlock], c4[kBlock];
    for (int64_t b = 0; b < out.scale_cols(); ++b) {
      const float* g = x.row(r) + b * kBlock;
      const float g_max = group_amax(g);
      const uint8_t s6 = quantize_block(g, g_max, 6.0f, t, c6);
      const uint8_t s4 = quantize_block(g, g_max, 4.0f, t, c4);
      const bool four = block_sq_error(g, c4, s4, t) < block_sq_error(g, c6, s6, t);
      store_block(out, r, b, four ? c4 : c6, four ? s4 : s6);
    }
  }
  return out;
}

NVFP4Tensor quantize_rtn_16x16(const MatrixRef& x, float scale_max) {
  check_shape(x, kBlock, "NVFP4 blocks are 16 elements along a row");
  if (x.rows % kBlock != 0)
    throw Error("tensor '" + x.name + "': " + std::to_string(x.rows) +
                " rows is not a multiple of 16 (16x16 square blocks)");
  NVFP4Tensor out(x.rows, x.cols);
  out.tensor_scale = tensor_scale(checked_amax(x), scale_max, 6.0f);
  const float t = out.tensor_scale;
#pragma omp parallel for
  for (int64_t r0 = 0; r0 < x.rows; r0 += kBlock) {
    uint8_t codes[kBlock];
    for (int64_t b = 0; b < out.scale_cols(); ++b) {
      float g_max = 0.0f;
      for (int64_t r = r0; r < r0 + kBlock; ++r) g_max = std::max(g_max, group_amax(x.row(r) + b * kBlock));
      for (int64_t r = r0; r < r0 + kBlock; ++r)
        store_block(out, r, b, codes, quantize_block(x.row(r) + b * kBlock, g_max, 6.0f, t, codes));
    }
  }
  return out;
}

}  // namespace q2::quant
