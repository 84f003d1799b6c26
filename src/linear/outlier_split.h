#pragma once
// The outlier split (Scheme::outlier_split, docs/NUMERICS.md "Outlier split"): MS-EDEN is biased on
// a chunk whose energy one element dominates (docs/RESULTS.md, the 30m study), so that element is
// taken out of the operand before quantization and its terms of the product are added exactly.
// Operands are [rows, inner] as a product reads them (A B^T), cut along inner into the rotation's
// chunks. CPU reference of cuda/quant/outlier_split.cu.
#include <cstdint>
#include <vector>

#include "common/host_device.h"
#include "common/matrix.h"
#include "quant/ms_eden.h"

namespace q2::linear {

// Per row and chunk of an operand: the inner index of the element taken out, or -1.
struct Dominated {
  int64_t rows = 0, chunks = 0;
  std::vector<int32_t> index;  // [rows, chunks]
  int32_t at(int64_t r, int64_t c) const { return index[static_cast<size_t>(r * chunks + c)]; }
};

// share in [0.5, 1): more than half the energy, so a chunk has one such element at most.
bool valid_outlier_split(double share);

// The decision both backends make for one chunk of `chunk` elements value(0 .. chunk-1) (chunk
// 16, 32, 64 or 128): the index of its largest |element| (the first of equals) when the chunk's
// outlier share exceeds `share`, computed as MS-EDEN's fallback computes it (quant::group_energy
// per 16, combine_groups, outlier_share); else -1 (always for a zero chunk).
template <class Value>
Q2_HD int dominated_element(const Value& value, int chunk, double share) {
  quant::ChunkEnergy e[128 / 16];
  float best = -1;
  int at = 0;
  for (int g = 0; g < chunk / 16; ++g) {
    float x[16];
    for (int i = 0; i < 16; ++i) {
      x[i] = value(g * 16 + i);
      const float a = x[i] < 0 ? -x[i] : x[i];
      if (a > best) best = a, at = g * 16 + i;
    }
    e[g] = quant::group_energy(x);
  }
  return quant::outlier_share(quant::combine_groups(e, chunk / 16)) > share ? at : -1;
}

// dominated_element of every chunk of m's rows. chunk: 16, 32, 64 or 128, dividing m.cols.
Dominated find_dominated(const Matrix& m, int chunk, double share);

// m with the elements d names set to zero.
Matrix without_dominated(Matrix m, const Dominated& d);

// out[j, i] += the terms a[j, t] b[i, t] of the product a b^T at every t taken out of row j of a or
// row i of b: chunk by chunk, a's t, then b's when it differs, accumulated by float32 fma from zero
// (the GPU kernel's order, so both give the same bits); the sum is then added to out[j, i], where
// there are terms (elsewhere out is left as it is, -0 included).
void add_dominated_products(const Matrix& a, const Dominated& da, const Matrix& b, const Dominated& db, Matrix& out);

}  // namespace q2::linear
