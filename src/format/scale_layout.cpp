#include "format/scale_layout.h"

#include "common/error.h"
#include "format/nvfp4.h"

namespace q2 {

namespace {
int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
}  // namespace

int64_t blocked_scale_offset(int64_t row, int64_t scale_col, int64_t scale_cols) {
  const int64_t tiles_per_row = round_up(scale_cols, 4) / 4;
  const int64_t tile = (row / 128) * tiles_per_row + scale_col / 4;
  return tile * 512 + (row % 32) * 16 + ((row / 32) % 4) * 4 + (scale_col % 4);
}

int64_t blocked_scale_bytes(int64_t rows, int64_t scale_cols) {
  return round_up(rows, 128) * round_up(scale_cols, 4);
}

int64_t nvfp4_packed_bytes(int64_t rows, int64_t cols) { return rows * cols / 2; }

int64_t blocked_nvfp4_bytes(int64_t rows, int64_t cols) {
  return nvfp4_packed_bytes(rows, cols) + blocked_scale_bytes(rows, cols / kBlock) +
         static_cast<int64_t>(sizeof(float));
}

std::vector<uint8_t> scales_to_blocked(const std::vector<uint8_t>& row_major, int64_t rows, int64_t scale_cols) {
  if (static_cast<int64_t>(row_major.size()) != rows * scale_cols)
    throw Error("scales_to_blocked: expected " + std::to_string(rows * scale_cols) + " scales, got " +
                std::to_string(row_major.size()));
  std::vector<uint8_t> out(static_cast<size_t>(blocked_scale_bytes(rows, scale_cols)), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < scale_cols; ++k)
      out[static_cast<size_t>(blocked_scale_offset(r, k, scale_cols))] = row_major[static_cast<size_t>(r * scale_cols + k)];
  return out;
}

std::vector<uint8_t> scales_from_blocked(const std::vector<uint8_t>& blocked, int64_t rows, int64_t scale_cols) {
  if (static_cast<int64_t>(blocked.size()) != blocked_scale_bytes(rows, scale_cols))
    throw Error("scales_from_blocked: expected " + std::to_string(blocked_scale_bytes(rows, scale_cols)) +
                " bytes for " + std::to_string(rows) + "x" + std::to_string(scale_cols) + " scales, got " +
                std::to_string(blocked.size()));
  std::vector<uint8_t> out(static_cast<size_t>(rows * scale_cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < scale_cols; ++k)
      out[static_cast<size_t>(r * scale_cols + k)] = blocked[static_cast<size_t>(blocked_scale_offset(r, k, scale_cols))];
  return out;
}

}  // namespace q2
