#include "train/spike_guard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/error_test_util.h"

namespace q2::train {
namespace {

TEST(SpikeGuard, OffNeverSkipsAndKeepsNothing) {
  SpikeGuard g(0, 50);
  EXPECT_FALSE(g.on());
  for (const double n : {1.0, 1e6, 1.0}) EXPECT_FALSE(g.skip(n));
  EXPECT_TRUE(std::isinf(g.threshold()));
  EXPECT_TRUE(g.state().is_null());
}

// Factor 2, window 4: the guard judges from 2 norms on, by the median (the middle two's mean).
TEST(SpikeGuard, SkipsExactlyTheNormsAboveFactorTimesTheMedian) {
  SpikeGuard g(2, 4);
  const std::vector<double> norms = {1.0, 5.0, 2.0, 4.5, 4.0, 6.5, 9.0, 11.0};
  // Before each: too few norms (0, then 1); median(1, 5) = 3; median(1, 5, 2) = 2;
  // median(1, 5, 2, 4.5) = 3.25; then the window drops its oldest: median(5, 2, 4.5, 4) = 4.25;
  // median(2, 4.5, 4, 6.5) = 4.25; median(4.5, 4, 6.5, 9) = 5.5, whose threshold 11 the last
  // norm equals and does not exceed.
  const double inf = INFINITY;
  const std::vector<double> thresholds = {inf, inf, 6, 4, 6.5, 8.5, 8.5, 11};
  const std::vector<bool> skipped = {false, false, false, true, false, false, true, false};
  for (size_t i = 0; i < norms.size(); ++i) {
    EXPECT_EQ(g.threshold(), thresholds[i]) << "step " << i + 1;
    EXPECT_EQ(g.skip(norms[i]), skipped[i]) << "step " << i + 1;
  }
  EXPECT_EQ(g.state(), nlohmann::json({4.0, 6.5, 9.0, 11.0}));
}

// A lasting rise is no spike: once it fills half the window it lifts the median.
TEST(SpikeGuard, ALastingRiseIsSkippedOnlyUntilItMovesTheMedian) {
  SpikeGuard g(2, 4);
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(g.skip(1.0));
  std::vector<bool> skipped;
  for (int i = 0; i < 4; ++i) skipped.push_back(g.skip(3.0));
  EXPECT_EQ(skipped, (std::vector<bool>{true, true, false, false}));
}

// The window goes through a checkpoint's JSON header bit for bit, and a resumed guard decides as
// the uninterrupted one.
TEST(SpikeGuard, StateRoundTripsExactlyThroughJsonText) {
  SpikeGuard a(1.5, 6), b(1.5, 6);
  const std::vector<double> norms = {0.1 + 0.2, 1.0 / 3, 2.0 / 3, std::sqrt(2.0), 0.7, 1e-300 + 0.5};
  for (const double n : norms) a.skip(n);
  b.restore(nlohmann::json::parse(a.state().dump()));
  EXPECT_EQ(b.state(), a.state());
  EXPECT_EQ(b.threshold(), a.threshold());
  for (const double n : {0.9, 2.0, 0.4}) EXPECT_EQ(b.skip(n), a.skip(n));
  // A smaller window keeps the newest norms; null (no guard state) is an empty window.
  SpikeGuard c(1.5, 2);
  c.restore(a.state());
  EXPECT_EQ(c.state(), nlohmann::json({2.0, 0.4}));
  c.restore(nullptr);
  EXPECT_EQ(c.filled(), 0u);
  EXPECT_EQ(test::error_of([&] { c.restore({1.0, "x"}); }),
            "the spike guard's window must be a list of gradient norms, got [1.0,\"x\"]");
  EXPECT_EQ(test::error_of([&] { c.restore(3.0); }), "the spike guard's window must be a list of gradient norms, got 3.0");
}

}  // namespace
}  // namespace q2::train
