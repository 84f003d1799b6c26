#include "format/scale_layout.h"

#include <gtest/gtest.h>

#include <set>

#include "common/error.h"

namespace q2 {
namespace {

// The layout as a row-major 5-D array [row_tile][col_tile][r % 32][(r / 32) % 4][k % 4],
// enumerated in storage order: an independent statement of the cuBLASLt layout.
TEST(ScaleLayout, MatchesTheFiveDimensionalStorageOrder) {
  const int64_t rows = 256, scale_cols = 12;
  int64_t offset = 0;
  for (int64_t rt = 0; rt < rows / 128; ++rt)
    for (int64_t ct = 0; ct < scale_cols / 4; ++ct)
      for (int64_t r32 = 0; r32 < 32; ++r32)
        for (int64_t r4 = 0; r4 < 4; ++r4)
          for (int64_t k4 = 0; k4 < 4; ++k4)
            ASSERT_EQ(blocked_scale_offset(rt * 128 + r4 * 32 + r32, ct * 4 + k4, scale_cols), offset++);
  EXPECT_EQ(offset, blocked_scale_bytes(rows, scale_cols));
}

TEST(ScaleLayout, PaddedShapesRoundTripWithZeroPadding) {
  const int64_t rows = 200, scale_cols = 6;  // pads to 256 x 8
  std::vector<uint8_t> rm(rows * scale_cols);
  for (size_t i = 0; i < rm.size(); ++i) rm[i] = static_cast<uint8_t>(1 + i % 250);
  const auto blocked = scales_to_blocked(rm, rows, scale_cols);
  EXPECT_EQ(static_cast<int64_t>(blocked.size()), 256 * 8);
  std::set<int64_t> used;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < scale_cols; ++k) used.insert(blocked_scale_offset(r, k, scale_cols));
  EXPECT_EQ(static_cast<int64_t>(used.size()), rows * scale_cols);  // no two scales collide
  for (int64_t i = 0; i < static_cast<int64_t>(blocked.size()); ++i)
    if (!used.count(i)) {
      EXPECT_EQ(blocked[i], 0) << i;
    }
  EXPECT_EQ(scales_from_blocked(blocked, rows, scale_cols), rm);
}

// The GPU's NVFP4 tensor: half a byte per code, the scales padded to 128 rows x 4 columns, one float.
TEST(ScaleLayout, Nvfp4TensorBytes) {
  EXPECT_EQ(nvfp4_packed_bytes(200, 96), 9600);
  EXPECT_EQ(blocked_nvfp4_bytes(200, 96), 9600 + 256 * 8 + 4);  // 6 scale columns pad to 8
  EXPECT_EQ(blocked_nvfp4_bytes(128, 64), 4096 + 128 * 4 + 4);
}

TEST(ScaleLayout, RejectsBuffersOfTheWrongSize) {
  EXPECT_THROW(scales_to_blocked(std::vector<uint8_t>(10), 4, 4), Error);
  EXPECT_THROW(scales_from_blocked(std::vector<uint8_t>(10), 4, 4), Error);
}

}  // namespace
}  // namespace q2
