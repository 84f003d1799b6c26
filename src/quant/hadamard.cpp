#include "quant/hadamard.h"

#include <string>

#include "common/error.h"
#include "quant/checks.h"

namespace q2::quant {

bool valid_rht_size(int n) { return n == 16 || n == 32 || n == 64 || n == 128; }

Rht::Rht(int n, uint64_t s) : size(n), seed(s) {
  if (!valid_rht_size(n))
    throw Error("Hadamard size " + std::to_string(n) + " is not supported (use " + kRhtSizes + ")");
  const philox::Block w = philox::words4(s, philox::kRhtSigns, 0);
  for (int i = 0; i < 4; ++i) sign_bits[i] = w.v[i];
}

void rht_forward_row(float* x, int64_t cols, const Rht& r) {
  const float norm = rht_norm(r.size);
  for (int64_t c0 = 0; c0 < cols; c0 += r.size) {
    float* p = x + c0;
    for (int i = 0; i < r.size; ++i) p[i] *= r.sign(i);
    fwht(p, r.size);
    for (int i = 0; i < r.size; ++i) p[i] *= norm;
  }
}

void rht_inverse_row(float* x, int64_t cols, const Rht& r) {
  const float norm = rht_norm(r.size);
  for (int64_t c0 = 0; c0 < cols; c0 += r.size) {
    float* p = x + c0;
    fwht(p, r.size);
    for (int i = 0; i < r.size; ++i) p[i] = p[i] * norm * r.sign(i);
  }
}

namespace {
template <class F>
Matrix rotate_rows(const MatrixRef& x, const Rht& r, F row_fn) {
  check_shape(x, r.size, "the Hadamard transform runs in whole chunks along a row");
  Matrix out(x.rows, x.cols);
  std::copy(x.data, x.data + x.rows * x.cols, out.data.begin());
#pragma omp parallel for
  for (int64_t i = 0; i < x.rows; ++i) row_fn(out.row(i), x.cols, r);
  return out;
}
}  // namespace

Matrix rht_forward(const MatrixRef& x, const Rht& r) { return rotate_rows(x, r, rht_forward_row); }
Matrix rht_inverse(const MatrixRef& y, const Rht& r) { return rotate_rows(y, r, rht_inverse_row); }

}  // namespace q2::quant
