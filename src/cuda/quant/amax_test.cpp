// amax.cu against the CPU reference (quant/checks.cpp: checked_amax), bit for bit, and its
// NaN/Inf detection. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "common/host_device.h"
#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "quant/checks.h"

namespace q2::cuda::test {
namespace {

TEST(GpuAmax, MatchesCpuAndRejectsNaNAndInf) {
  REQUIRE_GPU();
  Workspace ws;
  for (const Shape s : kShapes) {
    for (auto& [kind, m] : inputs(s.rows, s.cols, 11)) {
      const Bf16Tensor x = upload(m, "x");
      EXPECT_EQ(float_bits(amax(x.view(), ws)), float_bits(quant::checked_amax(MatrixRef(x.host, "x"))))
          << kind << " " << shape(m);
    }
  }
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    Matrix m = random(384, 256, 3);
    m.at(200, 17) = bad;
    const Bf16Tensor x = upload(m, "activations");
    expect_error([&] { amax(x.view(), ws); }, "tensor 'activations' contains NaN or Inf (detected on the GPU)");
  }
}

}  // namespace
}  // namespace q2::cuda::test
