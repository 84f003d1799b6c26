#include "quant/ms_eden.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/error_stats.h"
#include "quant/reference64.h"

namespace q2::quant {
namespace {

TEST(MsEden, MatchesFloat64RederivationWithTheSameRandomStream) {
  for (bool chunk : {false, true})
    for (int n : {128, 16}) {
      const Matrix x = random_matrix(40, 512, Dist::kStudent3, 21);
      const Rht r(n, 5);
      MsEdenConfig cfg;
      cfg.group = chunk ? EdenGroup::kChunk : EdenGroup::k16;
      const NVFP4Tensor q = quantize_ms_eden(MatrixRef(x, "x"), r, 6, cfg);
      const ref64::Result ref = ref64::ms_eden(x, r, 6, chunk);
      const ref64::Agreement a = ref64::compare(q.dequantize(), ref, 1e-5);
      EXPECT_EQ(a.mismatched, 0) << "chunk " << chunk << " n " << n;
      EXPECT_LT(a.ambiguous, x.size() / 50);
      EXPECT_NEAR(q.tensor_scale, ref.tensor_scale, 1e-5 * ref.tensor_scale);
    }
}

TEST(MsEden, LargestCorrectedScaleMapsTo256) {
  const Matrix x = random_matrix(64, 256, Dist::kLaplace, 2);
  const NVFP4Tensor q = quantize_ms_eden(MatrixRef(x, "x"), Rht(128, 1), 2);
  float top = 0;
  for (uint8_t s : q.scales) top = std::max(top, e4m3::decode(s));
  EXPECT_EQ(top, 256.0f);
}

// Mean over n draws, each with fresh rotation and rounding seeds, un-rotated.
double bias_ratio(const Matrix& x, int n, const MsEdenConfig& cfg, double* single_out = nullptr) {
  const DrawErrors e = mean_of_draws(x, n, [&](uint64_t k) {
    const Rht r(128, 500 + k);
    const Matrix y = quantize_ms_eden(MatrixRef(x, "x"), r, 900 + k, cfg).dequantize();
    return rht_inverse(MatrixRef(y, "y"), r);
  });
  if (single_out) *single_out = e.single;
  return e.mean * n / e.single;
}

TEST(MsEden, IsUnbiasedOnGaussianDataAndBeatsSrByTwo) {
  const Matrix x = random_matrix(32, 1024, Dist::kGaussian, 8);
  double single;
  const double r = bias_ratio(x, 256, {}, &single);
  EXPECT_GT(r, 0.7);
  EXPECT_LT(r, 1.3);
  EXPECT_GT(single, 0.0088);  // paper: 9.4e-3 per-16 correction
  EXPECT_LT(single, 0.0100);
}

TEST(MsEden, ResearchVariantsAreAlsoUnbiased) {
  const Matrix x = random_matrix(32, 512, Dist::kGaussian, 8);
  MsEdenConfig cfg;
  cfg.group = EdenGroup::kChunk;
  cfg.tensor_scale = EdenTensorScale::kRotatedAmax;
  const double r = bias_ratio(x, 128, cfg);
  EXPECT_GT(r, 0.7);
  EXPECT_LT(r, 1.3);
}

// ---- the stochastic-rounding fallback of outlier-dominated chunks (MsEdenConfig::eden_fallback)

MsEdenConfig with_fallback(double tau) {
  MsEdenConfig cfg;
  cfg.eden_fallback = tau;
  return cfg;
}

// Gaussian rows whose every `every`-th chunk of n gets one element raised by c sqrt(n) (spec
// §5.8): outlier share about c^2 / (c^2 + 1), at a position and sign that vary by row.
Matrix spiked(int64_t rows, int64_t cols, int n, double c, int every, uint64_t seed) {
  Matrix x = random_matrix(rows, cols, Dist::kGaussian, seed);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c0 = 0; c0 < cols; c0 += static_cast<int64_t>(n) * every)
      x.at(i, c0 + (7 * i + c0 / n) % n) += static_cast<float>((i % 2 ? -c : c) * std::sqrt(n));
  return x;
}

// The outlier share in long double, summed in plain order: independent of chunk_energy's.
long double share64(const float* x, int n) {
  long double top = 0, sum = 0;
  for (int i = 0; i < n; ++i) {
    const long double v = static_cast<long double>(x[i]) * x[i];
    sum += v;
    top = std::max(top, v);
  }
  return sum > 0 ? top / sum : 0;
}

TEST(MsEdenFallback, DecisionIsTheOutlierShareBeforeTheRotation) {
  const double tau = 0.9;
  for (int n : {16, 32, 64, 128}) {
    // Spikes of c = 0 .. 6 sigma sqrt(n): shares from about 1/n to 0.97, many near tau.
    int above = 0, below = 0;
    for (int k = 0; k < 400; ++k) {
      const Matrix x = spiked(1, n, n, 0.015 * k, 1, 1000 + k);
      const ChunkEnergy e = chunk_energy(x.row(0), n);
      const long double ref = share64(x.row(0), n);
      EXPECT_NEAR(outlier_share(e), static_cast<double>(ref), 1e-15);
      if (std::fabs(ref - tau) < 1e-12) continue;
      EXPECT_EQ(eden_falls_back(e, tau), ref > tau) << "n " << n << " k " << k;
      EXPECT_FALSE(eden_falls_back(e, 0.0));  // off
      (ref > tau ? above : below) += 1;
    }
    EXPECT_GT(above, 50) << n;
    EXPECT_GT(below, 50) << n;
  }
  // Exactly representable shares: the decision is "strictly above".
  float x[128] = {};
  x[5] = 2, x[9] = -1, x[40] = 1, x[77] = 1, x[127] = -1;  // 4 / 8
  const ChunkEnergy e = chunk_energy(x, 128);
  EXPECT_EQ(outlier_share(e), 0.5);
  EXPECT_FALSE(eden_falls_back(e, 0.5));
  EXPECT_TRUE(eden_falls_back(e, std::nextafter(0.5, 0.0)));
  // A lone element holds everything; zeros hold nothing and never fall back.
  float lone[16] = {};
  lone[3] = 1e-30f;  // its square is below float32's range, not float64's
  EXPECT_EQ(outlier_share(chunk_energy(lone, 16)), 1.0);
  const float zeros[128] = {};
  EXPECT_EQ(outlier_share(chunk_energy(zeros, 128)), 0.0);
  EXPECT_FALSE(eden_falls_back(chunk_energy(zeros, 128), 1e-9));
}

TEST(MsEdenFallback, MatchesFloat64RederivationWithTheSameRandomStream) {
  for (bool chunk : {false, true})
    for (int n : {128, 16}) {
      // Every third chunk dominated (c = 10: share 0.99), Student-t elsewhere.
      Matrix x = spiked(40, 512, n, 10, 3, 21);
      const Matrix t3 = random_matrix(40, 512, Dist::kStudent3, 22);
      for (int64_t i = 0; i < x.size(); ++i) x.data[i] += t3.data[i];
      int64_t fallbacks = 0;
      for (int64_t i = 0; i < x.rows; ++i)
        for (int64_t c0 = 0; c0 < x.cols; c0 += n) fallbacks += eden_falls_back(chunk_energy(x.row(i) + c0, n), 0.9);
      EXPECT_GT(fallbacks, x.size() / n / 4) << "chunk " << chunk << " n " << n;
      const Rht r(n, 5);
      MsEdenConfig cfg = with_fallback(0.9);
      cfg.group = chunk ? EdenGroup::kChunk : EdenGroup::k16;
      const NVFP4Tensor q = quantize_ms_eden(MatrixRef(x, "x"), r, 6, cfg);
      const ref64::Result ref = ref64::ms_eden(x, r, 6, chunk, 0.9);
      const ref64::Agreement a = ref64::compare(q.dequantize(), ref, 1e-5);
      EXPECT_EQ(a.mismatched, 0) << "chunk " << chunk << " n " << n;
      EXPECT_LT(a.ambiguous, x.size() / 50);
      EXPECT_NEAR(q.tensor_scale, ref.tensor_scale, 1e-5 * ref.tensor_scale);
    }
}

TEST(MsEdenFallback, OtherChunksAreBitIdenticalToPlainMsEden) {
  // Chunk 0 of each row dominated (share 0.99), the others Gaussian of sigma 10, which hold the
  // largest corrected scale, so the tensor scale is plain MS-EDEN's.
  Matrix x = spiked(16, 512, 128, 10, 4, 3);
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t j = 128; j < x.cols; ++j) x.at(i, j) *= 10;
  const Rht r(128, 9);
  const NVFP4Tensor plain = quantize_ms_eden(MatrixRef(x, "x"), r, 4);
  const NVFP4Tensor fb = quantize_ms_eden(MatrixRef(x, "x"), r, 4, with_fallback(0.9));
  ASSERT_EQ(fb.tensor_scale, plain.tensor_scale);
  int64_t differ = 0;
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t g = 0; g < fb.scale_cols(); ++g) {
      const bool dominated = g / 8 == 0;
      bool same = fb.scale(i, g) == plain.scale(i, g);
      for (int64_t b = 0; b < kBlock / 2; ++b)
        same = same && fb.packed[static_cast<size_t>(i * x.cols / 2 + g * kBlock / 2 + b)] ==
                           plain.packed[static_cast<size_t>(i * x.cols / 2 + g * kBlock / 2 + b)];
      if (!dominated) {
        EXPECT_TRUE(same) << "row " << i << " group " << g;
      }
      differ += !same;
    }
  EXPECT_GT(differ, x.rows * 4);  // the dominated chunks' codes differ
  // Above every chunk's share nothing falls back: plain MS-EDEN, bit for bit.
  const NVFP4Tensor none = quantize_ms_eden(MatrixRef(x, "x"), r, 4, with_fallback(0.995));
  EXPECT_EQ(none.packed, plain.packed);
  EXPECT_EQ(none.scales, plain.scales);
  EXPECT_EQ(none.tensor_scale, plain.tensor_scale);
}

// Spec §5.8's counterexample: plain MS-EDEN's mean of many draws levels off on chunks whose
// energy sits in one element; with the fallback it keeps falling like 1/draws.
TEST(MsEdenFallback, DominatedChunksConvergeLikeOneOverDrawsWherePlainMsEdenLevelsOff) {
  const Matrix x = spiked(16, 256, 128, 10, 1, 31);
  double single_plain, single_fb;
  const double plain = bias_ratio(x, 256, {}, &single_plain);
  const double fb = bias_ratio(x, 256, with_fallback(0.9), &single_fb);
  EXPECT_GT(plain, 3.0);
  EXPECT_GT(fb, 0.7);
  EXPECT_LT(fb, 1.3);
  std::printf("dominated chunks, 256 draws: mean * draws / single %.2f plain, %.2f fallback; single %.3g, %.3g\n", plain,
              fb, single_plain, single_fb);
}

TEST(MsEdenFallback, ThresholdOutsideItsRangeIsNamed) {
  const Matrix x = random_matrix(2, 128, Dist::kGaussian, 1);
  for (double tau : {-0.1, 1.0, static_cast<double>(NAN)}) {
    try {
      quantize_ms_eden(MatrixRef(x, "dY"), Rht(128, 1), 1, with_fallback(tau));
      FAIL() << tau;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("eden_fallback"), std::string::npos);
      EXPECT_NE(std::string(e.what()).find("dY"), std::string::npos);
    }
  }
}

TEST(MsEden, AllZeroTensorGivesZeroCodesAndFiniteScales) {
  const NVFP4Tensor q = quantize_ms_eden(MatrixRef(Matrix(4, 256), "z"), Rht(128, 1), 1);
  EXPECT_TRUE(std::isfinite(q.tensor_scale));
  for (uint8_t b : q.packed) EXPECT_EQ(b, 0);
  for (uint8_t s : q.scales) EXPECT_EQ(e4m3::decode(s), 0.0f);
}

TEST(MsEden, BadInputIsNamed) {
  try {
    quantize_ms_eden(MatrixRef(Matrix(4, 64), "dY"), Rht(128, 1), 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dY"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("multiple of 128"), std::string::npos);
  }
  Matrix x(2, 128);
  x.at(1, 100) = INFINITY;
  try {
    quantize_ms_eden(MatrixRef(x, "dY"), Rht(128, 1), 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Inf at [1, 100]"), std::string::npos);
  }
}

}  // namespace
}  // namespace q2::quant
