#pragma once
// Statistics of the Hadamard chunks MS-EDEN quantizes (`quartet2 grad-error --chunk-stats`), to
// explain a backward whose mean of many draws stops converging. EDEN's correction is exact only
// as the chunk grows; a chunk whose energy sits in one element rotates to nearly equal
// magnitudes, whose round-to-nearest error no scalar factor removes (spec §5.8).
#include <cstdint>
#include <vector>

#include "common/matrix.h"
#include "quant/hadamard.h"

namespace q2::eval {

// One chunk of one row (r.size elements along the GEMM inner dimension); all zero for a chunk
// of zeros (padding tokens).
struct ChunkStats {
  double energy;             // sum x_i^2
  double outlier_share;      // max x_i^2 / energy, before the rotation (1/n to 1; eden_fallback's)
  double kurtosis;           // n sum x_i^4 / energy^2, before the rotation (3 Gaussian, n one spike)
  double outlier_share_rot;  // the same two of the rotated chunk: a lone spike rotates to
  double kurtosis_rot;       // equal magnitudes, 1/n and 1
  double eden_min, eden_max;  // the EDEN factors S of its 16-groups (MS-EDEN's default), rotated
};

// Every chunk of every row of x under rotation r (x.cols a multiple of r.size), row by row.
std::vector<ChunkStats> chunk_stats(const MatrixRef& x, const quant::Rht& r);

// Nearest rank; both tails, as flat rotated chunks sit at the low end of kurtosis_rot.
struct Quantiles {
  double min, p1, p10, p50, p90, p99, max;
};

// A dominated chunk has outlier_share above kDominated: there MS-EDEN's bias is measurable
// (spec §5.8: a spike holding 99% of the chunk's energy biases it by tens of percent, 90% by 0.2%).
constexpr double kDominated = 0.9;

struct ChunkSummary {
  int64_t chunks = 0, zero_chunks = 0;
  Quantiles outlier_share{}, kurtosis{}, outlier_share_rot{}, kurtosis_rot{};
  Quantiles eden_spread{};     // eden_max - eden_min within a chunk
  Quantiles eden_deviation{};  // max |S - 1| within a chunk
  double dominated = 0;         // share of the chunks that are dominated
  double dominated_energy = 0;  // share of the tensor's energy in them
};

// Quantiles over the chunks that are not all zero (zero_chunks counts the others).
ChunkSummary summarize(const std::vector<ChunkStats>& chunks);

}  // namespace q2::eval
