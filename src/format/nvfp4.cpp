#include "format/nvfp4.h"

#include "common/error.h"
#include "format/e2m1.h"
#include "format/e4m3.h"

namespace q2 {

NVFP4Tensor::NVFP4Tensor(int64_t r, int64_t c) : rows(r), cols(c) {
  if (r < 0 || c < 0 || c % kBlock != 0)
    throw Error("NVFP4 tensor of shape [" + std::to_string(r) + ", " + std::to_string(c) +
                "]: the row length must be a non-negative multiple of 16");
  packed.assign(static_cast<size_t>(r * c / 2), 0);
  scales.assign(static_cast<size_t>(r * c / kBlock), 0);
}

float NVFP4Tensor::value(int64_t r, int64_t c) const {
  // The block-scale x code product is exact in float32; the tensor scale rounds once.
  return e2m1::decode(code(r, c)) * e4m3::decode(scale(r, c / kBlock)) * tensor_scale;
}

Matrix NVFP4Tensor::dequantize() const {
  Matrix out(rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out.row(r);
    for (int64_t b = 0; b < scale_cols(); ++b) {
      const float s = e4m3::decode(scale(r, b));
      for (int j = 0; j < kBlock; ++j) {
        const int64_t c = b * kBlock + j;
        o[c] = e2m1::decode(code(r, c)) * s * tensor_scale;
      }
    }
  }
  return out;
}

}  // namespace q2
