#include "linear/outlier_split.h"

#include <cmath>
#include <string>

#include "common/error.h"
#include "quant/hadamard.h"

namespace q2::linear {

bool valid_outlier_split(double share) { return share >= 0.5 && share < 1; }

Dominated find_dominated(const Matrix& m, int chunk, double share) {
  if (!quant::valid_rht_size(chunk))
    throw Error("outlier split: chunks of " + std::to_string(chunk) + " elements; " + quant::kRhtSizes +
                " are supported");
  if (m.cols % chunk != 0)
    throw Error("outlier split: the inner size " + std::to_string(m.cols) + " is not a multiple of the chunk " +
                std::to_string(chunk));
  Dominated d;
  d.rows = m.rows;
  d.chunks = m.cols / chunk;
  d.index.assign(static_cast<size_t>(d.rows * d.chunks), -1);
#pragma omp parallel for
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < d.chunks; ++c) {
      const float* x = m.row(r) + c * chunk;
      const int at = dominated_element([x](int t) { return x[t]; }, chunk, share);
      if (at >= 0) d.index[static_cast<size_t>(r * d.chunks + c)] = static_cast<int32_t>(c * chunk + at);
    }
  return d;
}

Matrix without_dominated(Matrix m, const Dominated& d) {
  for (int64_t r = 0; r < d.rows; ++r)
    for (int64_t c = 0; c < d.chunks; ++c)
      if (d.at(r, c) >= 0) m.at(r, d.at(r, c)) = 0;
  return m;
}

void add_dominated_products(const Matrix& a, const Dominated& da, const Matrix& b, const Dominated& db, Matrix& out) {
  if (a.cols != b.cols || da.rows != a.rows || db.rows != b.rows || da.chunks != db.chunks || out.rows != a.rows ||
      out.cols != b.rows)
    throw Error("outlier split: operands [" + std::to_string(a.rows) + ", " + std::to_string(a.cols) + "] and [" +
                std::to_string(b.rows) + ", " + std::to_string(b.cols) + "] do not match their chunks or the product [" +
                std::to_string(out.rows) + ", " + std::to_string(out.cols) + "]");
#pragma omp parallel for
  for (int64_t j = 0; j < a.rows; ++j)
    for (int64_t i = 0; i < b.rows; ++i) {
      float acc = 0;
      bool any = false;
      for (int64_t c = 0; c < da.chunks; ++c) {
        const int32_t ta = da.at(j, c), tb = db.at(i, c);
        if (ta >= 0) acc = std::fma(a.at(j, ta), b.at(i, ta), acc);
        if (tb >= 0 && tb != ta) acc = std::fma(a.at(j, tb), b.at(i, tb), acc);
        any = any || ta >= 0 || tb >= 0;
      }
      if (any) out.at(j, i) += acc;
    }
}

}  // namespace q2::linear
