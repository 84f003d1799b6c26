#pragma once
// Deterministic synthetic tensors for experiments and tests, drawn from Philox stream kData.
#include <cstdint>
#include <string>

#include "common/matrix.h"

namespace q2::quant {

enum class Dist { kGaussian, kLaplace, kStudent3 };

Dist parse_dist(const std::string& name);  // gaussian | laplace | student3
const char* dist_name(Dist d);

// Element i of the result depends only on (seed, i), whatever the shape or thread count.
Matrix random_matrix(int64_t rows, int64_t cols, Dist dist, uint64_t seed, double stddev = 1.0);

}  // namespace q2::quant
