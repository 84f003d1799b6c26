#pragma once
// The cuBLASLt "VEC16_UE4M3" block-scale layout: the [rows, K/16] scale matrix is cut into
// tiles of 128 rows x 4 scale columns (rows padded to 128, scale columns to 4, padding
// zero); tiles are stored row-major over the tile grid, 512 bytes each, and inside a tile
// the scale at (r, k) sits at (r % 32) * 16 + ((r / 32) % 4) * 4 + (k % 4).
#include <cstdint>
#include <vector>

namespace q2 {

int64_t blocked_scale_offset(int64_t row, int64_t scale_col, int64_t scale_cols);
int64_t blocked_scale_bytes(int64_t rows, int64_t scale_cols);

// An NVFP4 tensor [rows, cols] as the GPU holds it (cuda::DeviceNVFP4 allocates these parts):
// the packed E2M1 codes, and in all the codes, the blocked E4M3 scales and the float32 tensor scale.
int64_t nvfp4_packed_bytes(int64_t rows, int64_t cols);
int64_t blocked_nvfp4_bytes(int64_t rows, int64_t cols);

std::vector<uint8_t> scales_to_blocked(const std::vector<uint8_t>& row_major, int64_t rows, int64_t scale_cols);
std::vector<uint8_t> scales_from_blocked(const std::vector<uint8_t>& blocked, int64_t rows, int64_t scale_cols);

}  // namespace q2
