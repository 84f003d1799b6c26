#pragma once
// Randomized Hadamard transform (RHT) along rows, in independent chunks of n = 16, 32, 64
// or 128 elements, every chunk with the same signs d:
//   forward  y = H (d * x) / sqrt(n),   inverse  x = d * (H y) / sqrt(n),
// H the Sylvester Hadamard matrix (H[i][j] = (-1)^popcount(i & j)). Computed as an in-place
// fast Walsh-Hadamard transform in float32 with butterfly stages h = 1, 2, 4, ... in that
// order; GPU kernels follow the same order to reproduce it bit for bit.
// Sign i is bit i of the 128 bits in Philox words 0..3 of (seed, kRhtSigns): 1 means -1.
#include <array>
#include <cstdint>

#include "common/host_device.h"
#include "common/matrix.h"
#include "quant/philox.h"

namespace q2::quant {

struct Rht {
  int size = 128;
  uint64_t seed = 0;
  uint32_t sign_bits[4] = {0, 0, 0, 0};

  Rht() = default;
  Rht(int n, uint64_t s);
  float sign(int i) const { return (sign_bits[i >> 5] >> (i & 31)) & 1u ? -1.0f : 1.0f; }
};

// 1/sqrt(n) rounded once to float32 (exact powers of two for n = 16 and 64).
Q2_HD float rht_norm(int n) {
  return n == 16 ? 0.25f : n == 32 ? 0.17677669529663687f : n == 64 ? 0.125f : 0.088388347648318440f;
}

Q2_HD void fwht(float* x, int n) {
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

// In place over a row of `cols` elements (cols a multiple of r.size).
void rht_forward_row(float* x, int64_t cols, const Rht& r);
void rht_inverse_row(float* x, int64_t cols, const Rht& r);

// Whole matrices; shape checks name the tensor.
Matrix rht_forward(const MatrixRef& x, const Rht& r);
Matrix rht_inverse(const MatrixRef& y, const Rht& r);

bool valid_rht_size(int n);
// The sizes valid_rht_size accepts, in words for error messages.
inline constexpr const char* kRhtSizes = "16, 32, 64 or 128";

}  // namespace q2::quant
