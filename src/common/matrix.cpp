#include "common/matrix.h"

#include <new>

#include "common/error.h"
#include "common/memory.h"

namespace q2 {

Matrix::Matrix(int64_t r, int64_t c) : rows(r), cols(c) {
  const std::string what = "float32 matrix [" + std::to_string(r) + ", " + std::to_string(c) + "]";
  const int64_t elements = checked_mul(r, c, what);
  const int64_t bytes = checked_mul(elements, sizeof(float), what + " (elements x bytes each)");
  try {
    data.assign(static_cast<size_t>(elements), 0.0f);
  } catch (const std::bad_alloc&) {
    throw Error(what + ": cannot allocate " + format_bytes(static_cast<uint64_t>(bytes)) + " (out of memory)");
  }
}

Matrix first_rows(Matrix m, int64_t rows) {
  m.rows = rows;
  m.data.resize(static_cast<size_t>(rows * m.cols));
  return m;
}

Matrix transpose(const Matrix& m) {
  Matrix t(m.cols, m.rows);
  constexpr int64_t kTile = 32;  // cache-blocked
#pragma omp parallel for
  for (int64_t r0 = 0; r0 < m.rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < m.cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(r0 + kTile, m.rows); ++r)
        for (int64_t c = c0; c < std::min(c0 + kTile, m.cols); ++c) t.at(c, r) = m.at(r, c);
  return t;
}

}  // namespace q2
