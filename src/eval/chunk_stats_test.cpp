#include "eval/chunk_stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "quant/distributions.h"
#include "quant/reference64.h"

namespace q2::eval {
namespace {

// Energy, outlier share and kurtosis of n values, in float64 straight from the definitions.
struct Hand {
  double energy = 0, share = 0, kurtosis = 0;
};
Hand hand(const double* x, int n) {
  Hand h;
  double top = 0, e4 = 0;
  for (int i = 0; i < n; ++i) h.energy += x[i] * x[i], e4 += std::pow(x[i], 4), top = std::max(top, x[i] * x[i]);
  h.share = top / h.energy;
  h.kurtosis = n * e4 / (h.energy * h.energy);
  return h;
}

TEST(ChunkStats, MatchFloat64HandComputation) {
  // Rows: Gaussian; a spike holding 99% of its first chunk's energy, then a chunk of zeros
  // (a padding token's); heavy-tailed.
  Matrix x(3, 256);
  const Matrix g = quant::random_matrix(1, 256, quant::Dist::kGaussian, 3);
  const Matrix t = quant::random_matrix(1, 256, quant::Dist::kStudent3, 4);
  for (int64_t c = 0; c < 256; ++c) {
    x.at(0, c) = g.at(0, c);
    x.at(1, c) = c < 128 ? g.at(0, c) : 0.0f;
    x.at(2, c) = t.at(0, c);
  }
  x.at(1, 5) = 10.0f * std::sqrt(128.0f);
  const quant::Rht r(128, 9);
  const std::vector<ChunkStats> got = chunk_stats(MatrixRef(x, "x"), r);
  ASSERT_EQ(got.size(), 6u);

  const std::vector<double> y = ref64::rht(x, r);
  int compared_eden = 0;
  for (int64_t row = 0; row < 3; ++row)
    for (int64_t c = 0; c < 2; ++c) {
      const ChunkStats& s = got[static_cast<size_t>(row * 2 + c)];
      SCOPED_TRACE("row " + std::to_string(row) + " chunk " + std::to_string(c));
      if (row == 1 && c == 1) {
        EXPECT_EQ(s.energy, 0.0);
        continue;
      }
      std::vector<double> xc(x.row(row) + c * 128, x.row(row) + (c + 1) * 128);
      const Hand pre = hand(xc.data(), 128), rot = hand(y.data() + row * 256 + c * 128, 128);
      EXPECT_NEAR(s.energy, pre.energy, 1e-12 * pre.energy);
      EXPECT_NEAR(s.outlier_share, pre.share, 1e-12);
      EXPECT_NEAR(s.kurtosis, pre.kurtosis, 1e-10 * pre.kurtosis);
      // The rotation runs in float32.
      EXPECT_NEAR(s.outlier_share_rot, rot.share, 1e-6 * rot.share);
      EXPECT_NEAR(s.kurtosis_rot, rot.kurtosis, 1e-6 * rot.kurtosis);
      double lo = INFINITY, hi = -INFINITY;
      bool ambiguous = false;
      for (int gi = 0; gi < 128; gi += 16) {
        const ref64::EdenGroup eg = ref64::eden_group(y.data() + row * 256 + c * 128 + gi);
        ambiguous = ambiguous || eg.ambiguous;
        lo = std::min(lo, eg.factor()), hi = std::max(hi, eg.factor());
      }
      if (ambiguous) continue;
      ++compared_eden;
      EXPECT_NEAR(s.eden_min, lo, 1e-5);
      EXPECT_NEAR(s.eden_max, hi, 1e-5);
    }
  EXPECT_GE(compared_eden, 4);
  // The spike chunk: dominated before the rotation, flat after it (kurtosis near 1).
  EXPECT_GT(got[2].outlier_share, 0.98);
  EXPECT_LT(got[2].kurtosis_rot, 1.2);
  EXPECT_LT(got[0].outlier_share, 0.2);
}

TEST(ChunkStats, SummaryTakesNearestRankQuantilesOverNonZeroChunks) {
  std::vector<ChunkStats> chunks;
  // Outlier shares 0.05, 0.15, ..., 0.95 at energies 1..10; EDEN factors 1 -+ i/100.
  for (int i = 0; i < 10; ++i) {
    const double share = 0.05 + 0.1 * i;
    chunks.push_back({i + 1.0, share, 10 * share, share / 2, 1 + share, 1 - i / 100.0, 1 + i / 200.0});
  }
  chunks.push_back({});  // all zero
  const ChunkSummary s = summarize(chunks);
  EXPECT_EQ(s.chunks, 10);
  EXPECT_EQ(s.zero_chunks, 1);
  // Nearest rank of 10 sorted values: p1 and p10 the 1st, p50 the 5th, p90 the 9th, p99 the 10th.
  EXPECT_DOUBLE_EQ(s.outlier_share.min, 0.05);
  EXPECT_DOUBLE_EQ(s.outlier_share.p1, 0.05);
  EXPECT_DOUBLE_EQ(s.outlier_share.p10, 0.05);
  EXPECT_DOUBLE_EQ(s.outlier_share.p50, 0.45);
  EXPECT_DOUBLE_EQ(s.outlier_share.p90, 0.85);
  EXPECT_DOUBLE_EQ(s.outlier_share.p99, 0.95);
  EXPECT_DOUBLE_EQ(s.outlier_share.max, 0.95);
  EXPECT_DOUBLE_EQ(s.kurtosis.p50, 4.5);
  EXPECT_DOUBLE_EQ(s.outlier_share_rot.p90, 0.425);
  EXPECT_DOUBLE_EQ(s.kurtosis_rot.max, 1.95);
  EXPECT_NEAR(s.eden_spread.max, 0.09 + 0.045, 1e-12);
  EXPECT_NEAR(s.eden_deviation.p50, 0.04, 1e-12);
  // Only the last chunk (share 0.95, energy 10 of 55) is dominated.
  EXPECT_DOUBLE_EQ(s.dominated, 0.1);
  EXPECT_DOUBLE_EQ(s.dominated_energy, 10.0 / 55.0);
}

}  // namespace
}  // namespace q2::eval
