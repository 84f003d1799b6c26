// dequantize.cu against the CPU reference (format/nvfp4.cpp: NVFP4Tensor::dequantize, then
// bf16::encode), bit for bit. The unscaled expansion is checked exhaustively in
// fast_codec_test.cpp and beside each quantizer that writes it. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16.h"
#include "quant/rtn.h"

namespace q2::cuda::test {
namespace {

TEST(GpuDequant, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  for (const Shape s : kShapes)
    for (auto& [kind, m] : inputs(s.rows, s.cols, 71)) {
      const NVFP4Tensor q = quant::quantize_four_over_six(MatrixRef(m, "x"));
      const DeviceNVFP4 d = to_device(q);
      DeviceBuffer<__nv_bfloat16> out(q.rows * q.cols);
      dequantize_async(d, out.get());
      check(cudaDeviceSynchronize(), "dequantize");
      std::vector<uint16_t> got(static_cast<size_t>(q.rows * q.cols));
      check(cudaMemcpy(got.data(), out.get(), got.size() * 2, cudaMemcpyDeviceToHost), "download");
      const Matrix ref = q.dequantize();
      int64_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i)
        if (got[i] != bf16::encode(ref.data[i]) && bad++ == 0)
          ADD_FAILURE() << kind << " " << shape(m) << ": first mismatch at " << i;
      EXPECT_EQ(bad, 0) << kind << " " << shape(m);
    }
}

}  // namespace
}  // namespace q2::cuda::test
