#pragma once
// The outlier split (Scheme::outlier_split, docs/NUMERICS.md "Outlier split"): MS-EDEN is biased on
// a chunk whose energy one element dominates (docs/RESULTS.md, the 30m study), so that element is
// taken out of the operand before quantization and its terms of the product are added exactly.
// Operands are [rows, inner] as a product reads them (A B^T), cut along inner into the rotation's
// chunks. CPU reference of cuda/quant/outlier_split.cu.
#include <cstdint>
#include <vector>

#include "common/matrix.h"

namespace q2::linear {

// Per row and chunk of an operand: the inner index of the element taken out, or -1.
struct Dominated {
  int64_t rows = 0, chunks = 0;
  std::vector<int32_t> index;  // [rows, chunks]
  int32_t at(int64_t r, int64_t c) const { return index[static_cast<size_t>(r * chunks + c)]; }
};

// share in [0.5, 1): more than half the energy, so a chunk has one such element at most.
bool valid_outlier_split(double share);

// The largest |element| of each chunk (the first of equals) when the chunk's outlier share exceeds
// `share`, computed as MS-EDEN's fallback computes it (quant::chunk_energy, outlier_share). chunk:
// 16 times a power of two up to 128, dividing m.cols; zero chunks give up nothing.
Dominated find_dominated(const Matrix& m, int chunk, double share);

// m with the elements d names set to zero.
Matrix without_dominated(Matrix m, const Dominated& d);

// out[j, i] += the terms a[j, t] b[i, t] of the product a b^T at every t taken out of row j of a or
// row i of b: chunk by chunk, a's t, then b's when it differs, accumulated by float32 fma from zero
// (the GPU kernel's order, so both give the same bits); the sum is then added to out[j, i], where
// there are terms (elsewhere out is left as it is, -0 included).
void add_dominated_products(const Matrix& a, const Dominated& da, const Matrix& b, const Dominated& db, Matrix& out);

}  // namespace q2::linear
