#include "format/bf16_matrix.h"

namespace q2::bf16 {

Matrix round(Matrix m) {
  float* v = m.data.data();
#pragma omp parallel for
  for (int64_t i = 0; i < m.size(); ++i) v[i] = round(v[i]);
  return m;
}

}  // namespace q2::bf16
