// GPU RoPE (rope.cu) against the CPU reference, within u.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <string>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

TEST(GpuRope, MatchesCpuAndLeavesOtherColumns) {
  REQUIRE_GPU();
  struct Case {
    int64_t heads, hd, seq, col0;
    int direction;
  };
  for (const Case c : {Case{4, 64, 100, 0, 1}, Case{2, 128, 128, 256, -1}, Case{3, 6, 7, 18, 1}}) {
    const int64_t T = 3 * 128 + 7, d = c.heads * c.hd, cols = 3 * d;
    const Matrix x = random_bf16(T, cols, 20, 3.0);
    Matrix ref = x;
    // q and k in one call when col0 == 0 (2 * heads heads), else only the heads at col0.
    const int64_t n = c.col0 == 0 ? 2 * c.heads : c.heads;
    model::cpu::rope(ref, c.col0, n, c.hd, c.seq, 10000.0, c.direction);
    auto g = to_dev_bf16(x);
    rope(g.get(), T, cols, c.col0, n, c.hd, c.seq, 10000.0, c.direction);
    const Matrix got = from_dev(g, T, cols);
    const std::string what = "rope hd=" + std::to_string(c.hd);
    // cos/sin may differ from glibc in the last float bit.
    expect_close(got, ref, kU * 1.001, 1e-6 * max_abs(ref), what);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t col = 0; col < cols; ++col)
        if (col < c.col0 || col >= c.col0 + n * c.hd) {
          ASSERT_EQ(got.at(t, col), x.at(t, col)) << what;
        }
  }
}

}  // namespace
}  // namespace q2::cuda::ops::test
