// ms_eden.cu (RHT-128 + MS-EDEN along rows) against the CPU reference (quant/ms_eden.cpp),
// bit for bit, and the tests of the whole MS-EDEN family (ms_eden.cu, ms_eden_transpose.cu,
// requant.cu): the BF16 expansion of pass 2 and the NaN/Inf/shape errors. Every test skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "format/e4m3.h"
#include "quant/ms_eden.h"
#include "quant/rtn.h"

namespace q2::cuda::test {
namespace {

TEST(GpuMsEden, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : kEdenShapes)
    for (auto& [kind, m] : inputs(s.rows, s.cols, 81, 1e35))
      for (uint64_t seed : {uint64_t{1}, uint64_t{0xFEEDFACECAFEBEEFull}}) {
        const quant::Rht r(128, seed * 3 + 1);
        const Bf16Tensor x = upload(m, "dY");
        quantize_ms_eden(x.view(), r, seed, out, ws);
        expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(x.host, "dY"), r, seed),
                    "ms-eden " + kind + " " + shape(m));
      }
}

// Beyond what the fused kernel holds in shared memory (48 KB a block, about 2M 16-groups on an
// H100), MS-EDEN along rows runs as two kernels.
TEST(GpuMsEden, LargeTensorMatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const quant::Rht r(128, 77);
  const Bf16Tensor x = upload(random(8192, 12288, 88), "dY");
  const NVFP4Tensor ref = quant::quantize_ms_eden(MatrixRef(x.host, "dY"), r, 5);
  DeviceBuffer<__nv_bfloat16> expanded(x.host.size());
  quantize_ms_eden_async(x.view(), r, 5, out, ws, 0, expanded.get());
  ws.throw_if_nonfinite(x.name, 0);
  expect_same(to_host(out), ref, "ms-eden 8192 x 12288");
  expect_expansion(ref, expanded, "ms-eden 8192 x 12288");
}

TEST(GpuMsEden, OutliersUpToTheBf16Maximum) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  // One outlier per 128-chunk near 3e38: the rotation stays finite (|sum| < FLT_MAX).
  Matrix m = random(256, 512, 91);
  for (int64_t r = 0; r < m.rows; r += 3) m.at(r, (r * 37) % m.cols) = (r % 2 ? -3.0e38f : 3.3e38f);
  const quant::Rht rot(128, 5);
  const Bf16Tensor x = upload(m, "x");
  quantize_ms_eden(x.view(), rot, 9, out, ws);
  expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(x.host, "x"), rot, 9), "ms-eden outliers");
  const Bf16Tensor xt = upload(transpose(m), "xt");
  quantize_ms_eden_transposed(xt.view(), rot, 9, out, ws);
  expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(x.host, "x"), rot, 9), "transposed outliers");
}

// Pass 2's BF16 expansion, for the three MS-EDEN variants; the shapes include a partial last
// warp tile of 32 quads (4 scales each): 2 quads ({1, 128}), 80 ({128, 40} transposed).
TEST(GpuMsEdenFamily, ExpansionEqualsUnscaledDequantization) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const quant::Rht r(128, 4321);
  // quantize(expanded) runs one variant into `out`; both its codes and its expansion must match ref.
  auto check_variant = [&](const NVFP4Tensor& ref, const std::function<void(__nv_bfloat16*)>& quantize,
                           const std::string& what) {
    DeviceBuffer<__nv_bfloat16> expanded(ref.rows * ref.cols);
    quantize(expanded.get());
    expect_same(to_host(out), ref, what);
    expect_expansion(ref, expanded, what);
  };
  // 2048 x 4096: several tiles per block of the fused kernel; 9001 x 1152: blocks with unequal
  // tile counts, a partial batch of 4 and a partial last tile (on an H100).
  for (const Shape s : std::vector<Shape>{{1, 128}, {7, 384}, {384, 256}, {640, 1024}, {2048, 4096}, {9001, 1152}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 121, 1e35)) {
      const Bf16Tensor x = upload(m, "x");
      check_variant(
          quant::quantize_ms_eden(MatrixRef(x.host, "x"), r, 3),
          [&](__nv_bfloat16* e) { quantize_ms_eden_async(x.view(), r, 3, out, ws, 0, e); },
          "ms-eden " + kind + " " + shape(m));
    }
  for (const Shape s : std::vector<Shape>{{128, 40}, {384, 256}, {256, 1024}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 131, 1e35)) {
      const Bf16Tensor x = upload(m, "x");
      const Matrix xt = transpose(x.host);
      check_variant(
          quant::quantize_ms_eden(MatrixRef(xt, "xt"), r, 4),
          [&](__nv_bfloat16* e) { quantize_ms_eden_transposed_async(x.view(), r, 4, out, ws, 0, e); },
          "transposed " + kind + " " + shape(m));
    }
  for (const Shape s : std::vector<Shape>{{128, 32}, {384, 256}, {256, 800}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 141, 1e35)) {
      const NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(m, "x"));
      const DeviceNVFP4 da = to_device(a);
      const Matrix at = transpose(a.dequantize());
      check_variant(
          quant::quantize_ms_eden(MatrixRef(at, "xq^T"), r, 5),
          [&](__nv_bfloat16* e) { requantize_ms_eden_transposed_async(da, "xq", r, 5, out, ws, 0, e); },
          "requant " + kind + " " + shape(m));
    }
}

TEST(GpuMsEdenFamily, RejectsNaNAndInfAndBadShapes) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const quant::Rht r(128, 1);
  for (float bad : {NAN, -INFINITY}) {
    Matrix m = random(256, 256, 3);
    m.at(130, 5) = bad;
    const Bf16Tensor x = upload(m, "E");
    const std::string msg = "tensor 'E' contains NaN or Inf (detected on the GPU)";
    expect_error([&] { quantize_ms_eden(x.view(), r, 1, out, ws); }, msg);
    expect_error([&] { quantize_ms_eden_transposed(x.view(), r, 1, out, ws); }, msg);
  }
  // A NaN scale code in the packed input.
  NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(random(256, 256, 4), "X"));
  a.scale(131, 3) = e4m3::kNaNCode;
  const DeviceNVFP4 da = to_device(a);
  expect_error([&] { requantize_ms_eden_transposed(da, "Xq", r, 1, out, ws); },
               "tensor 'Xq' contains NaN or Inf (detected on the GPU)");
  // Afterwards a clean call succeeds (the flag is reset per call).
  const Bf16Tensor ok = upload(random(128, 128, 5), "ok");
  quantize_ms_eden(ok.view(), r, 1, out, ws);

  const Bf16Tensor x = upload(random(100, 192, 1), "G");
  expect_error([&] { quantize_ms_eden(x.view(), r, 1, out, ws); }, "tensor 'G'");
  expect_error([&] { quantize_ms_eden_transposed(x.view(), r, 1, out, ws); }, "tensor 'G'");
  expect_error([&] { quantize_ms_eden(ok.view(), quant::Rht(64, 1), 1, out, ws); }, "tensor 'ok'");
}

}  // namespace
}  // namespace q2::cuda::test
