#include "quant/sr.h"

#include <cmath>

#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/checks.h"
#include "quant/philox.h"
#include "quant/rtn.h"

namespace q2::quant {

NVFP4Tensor quantize_sr(const MatrixRef& x, float scale_override, uint64_t seed) {
  check_shape(x, kBlock, "NVFP4 blocks are 16 elements along a row");
  const float val_max = 6.0f / scale_override;
  NVFP4Tensor out(x.rows, x.cols);
  out.tensor_scale = tensor_scale(checked_amax(x), 448.0f, val_max);
  const float t = out.tensor_scale;
#pragma omp parallel for
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xr = x.row(r);
    uint8_t* pr = out.packed.data() + r * x.cols / 2;
    for (int64_t b = 0; b < out.scale_cols(); ++b) {
      const float* g = xr + b * kBlock;
      float g_max = 0.0f;
      for (int i = 0; i < kBlock; ++i) g_max = std::max(g_max, std::fabs(g[i]));
      const uint8_t s = e4m3::encode_rne((g_max / val_max) / t);
      out.scale(r, b) = s;
      const float denom = e4m3::decode(s) * t;
      const uint64_t base = static_cast<uint64_t>(r * x.cols + b * kBlock);  // a multiple of 16
      for (int i = 0; i < kBlock; i += 4) {
        const philox::Block w = philox::words4(seed, philox::kElementSR, (base + i) >> 2);
        uint8_t q[4];
        for (int j = 0; j < 4; ++j) q[j] = denom == 0.0f ? 0 : e2m1::encode_sr(g[i + j] / denom, w.v[j]);
        pr[(b * kBlock + i) / 2] = static_cast<uint8_t>(q[0] | (q[1] << 4));
        pr[(b * kBlock + i) / 2 + 1] = static_cast<uint8_t>(q[2] | (q[3] << 4));
      }
    }
  }
  return out;
}

}  // namespace q2::quant
