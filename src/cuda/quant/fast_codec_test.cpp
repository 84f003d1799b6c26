// The fast codecs of fast_codec.h (and the unscaled BF16 expansion of device_common.cuh)
// against the reference codecs (format/e2m1.h, format/e4m3.h) and IEEE division, exhaustively,
// on the GPU: the device-side loops are in test_support.cu. Every test skips without a GPU.
#include <gtest/gtest.h>

#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"

namespace q2::cuda::test {
namespace {

TEST(FastCodec, E2m1RoundingEqualsReferenceForAllFiniteFloats) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e2m1_codec_mismatches(&first), 0ull) << "first mismatching float bits " << std::hex << first;
}

TEST(FastCodec, E4m3HardwareConversionsEqualReference) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e4m3_codec_mismatches(&first), 0ull) << "first mismatching float bits / code " << std::hex << first;
}

TEST(FastCodec, E4m3StochasticRoundingEqualsReferenceForAllNonNegativeFloats) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e4m3_sr_mismatches(&first), 0ull) << "first mismatching float bits " << std::hex << first;
}

TEST(FastCodec, QuotientEqualsIeeeDivisionForAllBf16Numerators) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::quotient_mismatches(&first), 0ull) << "first mismatching divisor index " << first;
}

TEST(FastCodec, UnscaledExpansionEqualsReferenceForAllCodesAndScales) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::expansion_mismatches(&first), 0ull)
      << "first mismatching scale << 6 | scale byte << 4 | code word " << std::hex << first;
}

}  // namespace
}  // namespace q2::cuda::test
