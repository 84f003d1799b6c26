// sr.cu against the CPU reference (quant/sr.cpp), bit for bit. Its saturation and NaN/Inf
// tests run with the rest of the 1x16 family in rtn_test.cpp. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "quant/sr.h"

namespace q2::cuda::test {
namespace {

TEST(GpuSr, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : kShapes)
    for (auto& [kind, m] : inputs(s.rows, s.cols, 41))
      for (float so : {quant::kSrScaleOverride, 1.0f})
        for (uint64_t seed : {uint64_t{7}, uint64_t{0x123456789ABCDEFull}}) {
          const Bf16Tensor x = upload(m, "x");
          quantize_sr(x.view(), so, seed, out, ws);
          expect_same(to_host(out), quant::quantize_sr(MatrixRef(x.host, "x"), so, seed),
                      "sr " + kind + " " + shape(m) + " override " + std::to_string(so));
        }
}

}  // namespace
}  // namespace q2::cuda::test
