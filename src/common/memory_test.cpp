#include "common/memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "common/error_test_util.h"

namespace q2 {
namespace {

using test::error_of;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(Memory, CheckedMulAtTheInt64Edges) {
  EXPECT_EQ(checked_mul(kMax, 1, "x"), kMax);
  EXPECT_EQ(checked_mul(0, kMax, "x"), 0);
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31, "x"), int64_t{1} << 62);
  EXPECT_EQ(checked_mul(3037000499, 3037000499, "x"), 9223372030926249001);  // the largest square that fits
  EXPECT_EQ(error_of([] { checked_mul(3037000500, 3037000500, "--rows x --cols"); }),
            "--rows x --cols: 3037000500 x 3037000500 overflows a 64-bit integer");
  EXPECT_NE(error_of([] { checked_mul(int64_t{1} << 31, int64_t{1} << 32, "x"); }).find("overflows"), std::string::npos);
  EXPECT_NE(error_of([] { checked_mul(kMax, 2, "x"); }).find("overflows"), std::string::npos);
  EXPECT_EQ(error_of([] { checked_mul(-1, 5, "shape"); }), "shape: -1 x 5 is a negative size");
  EXPECT_NE(error_of([] { checked_mul(3, -2, "x"); }).find("negative"), std::string::npos);
  EXPECT_NE(error_of([] { checked_mul(0, -2, "x"); }).find("negative"), std::string::npos);
}

TEST(Memory, FormatBytesPicksTheLargestUnitBelow1024) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(7), "7 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1 KiB");
  EXPECT_EQ(format_bytes(12 * 1024), "12 KiB");
  EXPECT_EQ(format_bytes(512ull << 20), "512 MiB");
  EXPECT_EQ(format_bytes(3ull << 29), "1.50 GiB");
  EXPECT_EQ(format_bytes((1ull << 20) - 1), "1 MiB");     // rounds up into the next unit
  EXPECT_EQ(format_bytes((1ull << 30) - 1), "1.00 GiB");  // not "1024 MiB"
  EXPECT_EQ(format_bytes(1ull << 63), "8.00 EiB");
  EXPECT_EQ(format_bytes(std::numeric_limits<uint64_t>::max()), "16.00 EiB");
}

TEST(Memory, RequireHostMemoryNamesTheRequest) {
  const uint64_t available = available_host_memory();
  EXPECT_GT(available, 0u);
  EXPECT_EQ(error_of([] { require_host_memory(0, "nothing"); }), "no error");
  const std::string e = error_of([] { require_host_memory(std::numeric_limits<uint64_t>::max(), "the test tensor"); });
  EXPECT_EQ(e.rfind("the test tensor needs 16.00 EiB of memory, but only ", 0), 0u) << e;
  EXPECT_TRUE(e.ends_with(" is available")) << e;
}

}  // namespace
}  // namespace q2
