#include "format/nvfp4.h"

#include <array>

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

namespace {
// Both codes of a packed byte, decoded: table[b] = {low nibble, high nibble}.
const std::array<std::array<float, 2>, 256>& byte_table() {
  static const auto t = [] {
    std::array<std::array<float, 2>, 256> v{};
    for (int b = 0; b < 256; ++b) v[b] = {e2m1::decode(static_cast<uint8_t>(b & 0xF)), e2m1::decode(static_cast<uint8_t>(b >> 4))};
    return v;
  }();
  return t;
}
}  // namespace

void NVFP4Tensor::dequantize_row_unscaled(int64_t r, float* out) const {
  const auto& table = byte_table();
  const uint8_t* p = packed.data() + r * cols / 2;
  for (int64_t b = 0; b < scale_cols(); ++b) {
    const float s = e4m3::decode(scale(r, b));
    for (int j = 0; j < kBlock / 2; ++j) {
      const auto& pair = table[p[b * kBlock / 2 + j]];
      out[b * kBlock + 2 * j] = pair[0] * s;
      out[b * kBlock + 2 * j + 1] = pair[1] * s;
    }
  }
}

Matrix NVFP4Tensor::dequantize() const {
  Matrix out(rows, cols);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out.row(r);
    dequantize_row_unscaled(r, o);
    for (int64_t c = 0; c < cols; ++c) o[c] *= tensor_scale;  // (code * scale) * t, as value()
  }
  return out;
}

NVFP4Tensor transpose_square_blocks(const NVFP4Tensor& t, const std::string& name) {
  if (t.rows % kBlock != 0)
    throw Error("tensor '" + name + "': cannot transpose in NVFP4, " + std::to_string(t.rows) +
                " rows is not a multiple of 16");
  NVFP4Tensor out(t.cols, t.rows);
  out.tensor_scale = t.tensor_scale;
  for (int64_t r0 = 0; r0 < t.rows; r0 += kBlock)
    for (int64_t b = 0; b < t.scale_cols(); ++b) {
      const uint8_t s = t.scale(r0, b);
      for (int64_t r = r0; r < r0 + kBlock; ++r) {
        if (t.scale(r, b) != s)
          throw Error("tensor '" + name + "' is not square-block quantized: rows " + std::to_string(r0) + " and " +
                      std::to_string(r) + " of block column " + std::to_string(b) + " have different scales");
        out.scale(b * kBlock + (r - r0), r0 / kBlock) = s;
      }
    }
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t c = 0; c < t.cols; ++c) out.set_code(c, r, t.code(r, c));
  return out;
}

}  // namespace q2
