// ms_eden_transpose.cu (MS-EDEN of X^T) against the CPU reference (quant/ms_eden.cpp of the
// transpose), bit for bit. Its expansion, outlier and error tests run with the MS-EDEN family in
// ms_eden_test.cpp. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <vector>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "quant/ms_eden.h"

namespace q2::cuda::test {
namespace {

TEST(GpuMsEdenTransposed, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : std::vector<Shape>{{128, 8}, {384, 256}, {640, 1024}, {256, 40}, {128, 200}, {4096, 4096}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 101, 1e35)) {
      const quant::Rht r(128, 77);
      const Bf16Tensor x = upload(m, "X");
      quantize_ms_eden_transposed(x.view(), r, 12, out, ws);
      const Matrix xt = transpose(x.host);
      expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(xt, "Xt"), r, 12),
                  "transposed " + kind + " " + shape(m));
    }
}

}  // namespace
}  // namespace q2::cuda::test
