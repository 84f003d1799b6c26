#include "common/matrix.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "common/error_test_util.h"

namespace q2 {
namespace {

using test::error_of;

TEST(Matrix, ShapesThatCannotExistAreNamed) {
  const Matrix m(3, 5);
  EXPECT_EQ(m.size(), 15);
  EXPECT_EQ(m.data, std::vector<float>(15, 0.0f));
  EXPECT_EQ(error_of([] { Matrix(-1, 4); }), "float32 matrix [-1, 4]: -1 x 4 is a negative size");
  EXPECT_EQ(error_of([] { Matrix(int64_t{1} << 40, int64_t{1} << 30); }),
            "float32 matrix [1099511627776, 1073741824]: 1099511627776 x 1073741824 overflows a 64-bit integer");
  // The elements fit int64, their bytes do not.
  EXPECT_EQ(error_of([] { Matrix(int64_t{1} << 61, 2); }),
            "float32 matrix [2305843009213693952, 2] (elements x bytes each): 4611686018427387904 x 4 overflows a "
            "64-bit integer");
  // 4 EiB fits every integer but no address space: the allocation itself fails. (AddressSanitizer
  // reports a failed operator new and aborts instead of throwing, so its build leaves this out.)
#ifndef Q2_ASAN_RUNTIME
  EXPECT_EQ(error_of([] { Matrix(int64_t{1} << 40, int64_t{1} << 20); }),
            "float32 matrix [1099511627776, 1048576]: cannot allocate 4.00 EiB (out of memory)");
#endif
}

}  // namespace
}  // namespace q2
