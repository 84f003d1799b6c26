#include "format/nvfp4.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "format/e2m1.h"
#include "format/e4m3.h"

namespace q2 {
namespace {

TEST(NVFP4Tensor, EvenElementIsTheLowNibble) {
  NVFP4Tensor t(2, 32);
  t.set_code(1, 4, 0x3);
  t.set_code(1, 5, 0xC);
  EXPECT_EQ(t.packed[(32 + 4) / 2], 0xC3);
  EXPECT_EQ(t.code(1, 4), 0x3);
  EXPECT_EQ(t.code(1, 5), 0xC);
  t.set_code(1, 4, 0x9);  // rewriting one nibble leaves its neighbour alone
  EXPECT_EQ(t.code(1, 5), 0xC);
}

TEST(NVFP4Tensor, DequantizesCodeTimesBlockScaleTimesTensorScale) {
  NVFP4Tensor t(3, 48);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 48; ++c) t.set_code(r, c, static_cast<uint8_t>((r * 7 + c) % 16));
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t b = 0; b < 3; ++b) t.scale(r, b) = static_cast<uint8_t>(0x30 + r * 5 + b);
  t.tensor_scale = 0.3f;
  const Matrix d = t.dequantize();
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 48; ++c) {
      const double want = static_cast<double>(e2m1::decode(t.code(r, c))) * e4m3::decode(t.scale(r, c / 16)) * 0.3f;
      EXPECT_NEAR(d.at(r, c), want, 1e-6 * std::fabs(want)) << r << "," << c;
      EXPECT_EQ(d.at(r, c), t.value(r, c));
    }
}

TEST(NVFP4Tensor, RejectsRowsThatAreNotWholeBlocks) {
  EXPECT_THROW(NVFP4Tensor(4, 24), Error);
}

}  // namespace
}  // namespace q2
