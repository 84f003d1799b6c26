#pragma once
// An NVFP4 tensor: E2M1 codes in 1x16 blocks along each row (rows are the GEMM's inner
// dimension K), one E4M3 decode scale per block, one float32 decode scale per tensor:
//   x[r][c] = e2m1(code[r][c]) * e4m3(scale[r][c / 16]) * tensor_scale.
// Packing: two codes per byte, row-major; the even element 2i is the LOW nibble.
// Scales here are plain row-major [rows, cols/16]; scale_layout.h converts to the
// 128x4-tiled layout cuBLASLt consumes.
#include <cstdint>
#include <string>
#include <vector>

#include "common/matrix.h"

namespace q2 {

constexpr int kBlock = 16;

struct NVFP4Tensor {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> packed;  // rows * cols / 2 bytes
  std::vector<uint8_t> scales;  // rows * cols / 16 E4M3 codes, row-major
  float tensor_scale = 1.0f;

  NVFP4Tensor() = default;
  NVFP4Tensor(int64_t r, int64_t c);

  int64_t scale_cols() const { return cols / kBlock; }
  uint8_t code(int64_t r, int64_t c) const {
    const uint8_t b = packed[static_cast<size_t>((r * cols + c) >> 1)];
    return (c & 1) ? (b >> 4) : (b & 0xF);
  }
  void set_code(int64_t r, int64_t c, uint8_t v) {
    uint8_t& b = packed[static_cast<size_t>((r * cols + c) >> 1)];
    b = (c & 1) ? static_cast<uint8_t>((b & 0x0F) | (v << 4)) : static_cast<uint8_t>((b & 0xF0) | (v & 0xF));
  }
  uint8_t scale(int64_t r, int64_t block) const { return scales[static_cast<size_t>(r * scale_cols() + block)]; }
  uint8_t& scale(int64_t r, int64_t block) { return scales[static_cast<size_t>(r * scale_cols() + block)]; }

  float value(int64_t r, int64_t c) const;
  Matrix dequantize() const;
  // Row r as code x block scale (no tensor scale): exact in float32.
  void dequantize_row_unscaled(int64_t r, float* out) const;
  size_t bytes() const { return packed.size() + scales.size() + sizeof(float); }
};

// The transpose of a tensor whose scales are constant over 16x16 tiles (square-block
// quantization): codes move, each tile keeps its scale. Throws if the scales differ in a tile.
NVFP4Tensor transpose_square_blocks(const NVFP4Tensor& t, const std::string& name);

}  // namespace q2
