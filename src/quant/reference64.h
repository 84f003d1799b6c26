#pragma once
// Test-only float64 re-derivation of the quantizers, written from the spec's formulas with
// brute-force grid searches instead of the codecs' bit tricks. Each element also carries an
// `ambiguous` flag: some rounding decision behind it (a code, a scale, the 4/6 choice, a
// stochastic coin) lay within a hair of its threshold, where float32 and float64 arithmetic
// may legitimately disagree. Tests demand agreement everywhere else and few such elements.
#include <array>
#include <cstdint>
#include <vector>

#include "common/matrix.h"
#include "quant/hadamard.h"

namespace q2::ref64 {

struct Result {
  std::vector<double> value;      // dequantized, row-major (MS-EDEN: in the rotated basis)
  std::vector<uint8_t> ambiguous;  // per element
  double tensor_scale = 0.0;
};

const std::vector<double>& e2m1_grid();  // the 8 magnitudes, ascending
const std::vector<double>& e4m3_grid();  // the 127 finite non-negative values, ascending

// Index of the grid value nearest to a >= 0, ties to the even index, saturating at the top;
// `margin` receives the distance to the nearest decision boundary relative to the grid step.
int nearest_even(const std::vector<double>& grid, double a, double* margin = nullptr);

Result rtn(const Matrix& x, double val_max, double scale_max);
Result four_over_six(const Matrix& x);
Result sr(const Matrix& x, double scale_override, uint64_t seed);
// eden_fallback > 0: chunks whose max x_i^2 / sum x_i^2 exceeds it take MS-EDEN's stochastic
// rounding fallback (quant/ms_eden.h).
Result ms_eden(const Matrix& x, const quant::Rht& r, uint64_t sr_seed, bool chunk_group, double eden_fallback = 0);

// MS-EDEN's default first stage on one 16-group of rotated values y: the scale m, the codes'
// values q of y / m and the EDEN sums sum v^2, sum v q of v = y / m.
struct EdenGroup {
  double m = 0;
  std::array<double, 16> q{};
  double vv = 0, vq = 0;
  bool ambiguous = false;
  double factor() const { return vq == 0 ? 1.0 : vv / vq; }
};
EdenGroup eden_group(const double* y);

// How a float32 quantizer's dequantized output agrees with the reference: elements that
// differ by more than rel_tol though unambiguous, and the count of ambiguous elements.
struct Agreement {
  int64_t mismatched = 0, ambiguous = 0;
};
Agreement compare(const Matrix& dequantized, const Result& ref, double rel_tol);

// The float64 product H diag(d) x / sqrt(n) per chunk, H[i][j] = (-1)^popcount(i & j).
std::vector<double> rht(const Matrix& x, const quant::Rht& r);

}  // namespace q2::ref64
