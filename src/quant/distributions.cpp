#include "quant/distributions.h"

#include <cmath>
#include <numbers>

#include "common/error.h"
#include "quant/philox.h"

namespace q2::quant {

Dist parse_dist(const std::string& name) {
  if (name == "gaussian") return Dist::kGaussian;
  if (name == "laplace") return Dist::kLaplace;
  if (name == "student3") return Dist::kStudent3;
  throw Error("unknown distribution '" + name + "' (use gaussian, laplace or student3)");
}

const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kGaussian: return "gaussian";
    case Dist::kLaplace: return "laplace";
    case Dist::kStudent3: return "student3";
  }
  return "?";
}

namespace {

double open_unit(uint32_t w) { return (static_cast<double>(w) + 0.5) * 0x1p-32; }

// Two independent standard normals (Box-Muller) from two words.
void normals(uint32_t a, uint32_t b, double& z0, double& z1) {
  const double r = std::sqrt(-2.0 * std::log(open_unit(a))), th = 2.0 * std::numbers::pi * open_unit(b);
  z0 = r * std::cos(th);
  z1 = r * std::sin(th);
}

double sample(Dist dist, uint64_t seed, uint64_t i) {
  const philox::Block w = philox::words4(seed, philox::kData, i);
  double z0, z1;
  switch (dist) {
    case Dist::kGaussian:
      normals(w.v[0], w.v[1], z0, z1);
      return z0;
    case Dist::kLaplace: {
      const double u = open_unit(w.v[0]) - 0.5;
      return -std::copysign(1.0, u) * std::log(1.0 - 2.0 * std::fabs(u)) / std::numbers::sqrt2;  // unit variance
    }
    case Dist::kStudent3: {
      // t with 3 degrees of freedom: z0 / sqrt(chi2_3 / 3), chi2_3 from three more normals.
      double z2, z3;
      normals(w.v[0], w.v[1], z0, z1);
      normals(w.v[2], w.v[3], z2, z3);
      return z0 / std::sqrt((z1 * z1 + z2 * z2 + z3 * z3) / 3.0);
    }
  }
  return 0.0;
}

}  // namespace

Matrix random_matrix(int64_t rows, int64_t cols, Dist dist, uint64_t seed, double stddev) {
  Matrix m(rows, cols);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      m.at(r, c) = static_cast<float>(stddev * sample(dist, seed, static_cast<uint64_t>(r * cols + c)));
  return m;
}

}  // namespace q2::quant
