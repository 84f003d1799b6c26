#include "common/matrix.h"

namespace q2 {

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
