// requant.cu (NVFP4 -> MS-EDEN of the dequantized transpose) against the CPU reference
// (quant/ms_eden.cpp of transpose(A.dequantize())), bit for bit, including the checked path of
// huge tensor scales. Its expansion and error tests run with the MS-EDEN family in
// ms_eden_test.cpp. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "format/e4m3.h"
#include "quant/ms_eden.h"
#include "quant/rtn.h"

namespace q2::cuda::test {
namespace {

TEST(GpuRequant, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : std::vector<Shape>{{128, 32}, {384, 256}, {640, 1024}, {256, 96}, {128, 800}, {4096, 4096}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 111, 1e35)) {
      const NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(m, "X"));
      const DeviceNVFP4 da = to_device(a);
      const quant::Rht r(128, 1234);
      requantize_ms_eden_transposed(da, "Xq", r, 56, out, ws);
      const Matrix at = transpose(a.dequantize());
      expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(at, "Xq^T"), r, 56),
                  "requant " + kind + " " + shape(m));
    }
}

// A tensor scale above ~1.27e35 (6 * 448 * t overflows) takes the kernel's checked path. Scales
// of at most 2 keep every dequantized value and every rotation sum finite, so the result must
// still match; then one product 6 * 448 * t overflows, which is an error.
TEST(GpuRequant, HugeTensorScaleMatchesCpuOrOverflowIsAnError) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(random(256, 512, 6), "X"));
  const uint8_t two = e4m3::encode_rne(2.0f);
  for (uint8_t& s : a.scales) s = std::min(s, two);
  a.tensor_scale = 1.5e35f;
  const quant::Rht r(128, 99);
  requantize_ms_eden_transposed(to_device(a), "Xq", r, 7, out, ws);
  const Matrix at = transpose(a.dequantize());
  expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(at, "Xq^T"), r, 7), "requant, t = 1.5e35");

  a.scale(200, 17) = e4m3::encode_rne(448.0f);
  a.set_code(200, 17 * 16 + 3, 7);  // 6.0
  expect_error([&] { requantize_ms_eden_transposed(to_device(a), "Xq", r, 7, out, ws); },
               "tensor 'Xq' contains NaN or Inf (detected on the GPU)");
}

}  // namespace
}  // namespace q2::cuda::test
