// rtn.cu (RTN 1x16, Four-over-Six, RTN 16x16) against the CPU reference (quant/rtn.cpp), bit
// for bit: codes, row-major scales (after unblocking) and the tensor scale; the BF16 expansion
// they write for the emulated GEMM; float32 input read as its BF16 copy; saturation near the
// limits and NaN/Inf/shape errors of the whole 1x16 family (SR included). Every test skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/host_device.h"
#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16_matrix.h"
#include "quant/checks.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::cuda::test {
namespace {

TEST(GpuRtn, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const std::vector<quant::RtnConfig> cfgs = {{6.0f, 448.0f}, {6.0f / 0.92f, 448.0f}, {4.0f, 256.0f}};
  for (const Shape s : kShapes)
    for (auto& [kind, m] : inputs(s.rows, s.cols, 21))
      for (const quant::RtnConfig& cfg : cfgs) {
        const Bf16Tensor x = upload(m, "x");
        quantize_rtn(x.view(), cfg, out, ws);
        expect_same(to_host(out), quant::quantize_rtn(MatrixRef(x.host, "x"), cfg),
                    "rtn " + kind + " " + shape(m) + " val_max " + std::to_string(cfg.val_max));
      }
}

TEST(GpuFourOverSix, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : kShapes)
    for (auto& [kind, m] : inputs(s.rows, s.cols, 31)) {
      const Bf16Tensor x = upload(m, "x");
      quantize_four_over_six(x.view(), out, ws);
      expect_same(to_host(out), quant::quantize_four_over_six(MatrixRef(x.host, "x")), "4/6 " + kind + " " + shape(m));
    }
}

TEST(GpuRtn16x16, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : std::vector<Shape>{{16, 16}, {48, 80}, {384, 256}, {640, 1024}, {4096, 4096}, {32, 1040}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 51))
      for (float scale_max : {quant::kSquareBlockScaleMax, 256.0f}) {
        const Bf16Tensor x = upload(m, "w");
        quantize_rtn_16x16(x.view(), scale_max, out, ws);
        expect_same(to_host(out), quant::quantize_rtn_16x16(MatrixRef(x.host, "w"), scale_max),
                    "16x16 " + kind + " " + shape(m));
      }
}

TEST(GpuRtn, SaturatesNearTheLimits) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  // Values near 448 * 6 * 1e30 and up to the BF16 maximum, plus one group far below the rest.
  Matrix m = random(384, 256, 61, 448.0 * 6.0 * 1e30);
  m.at(5, 3) = 3.3e38f;
  m.at(100, 200) = -3.0e38f;
  for (int i = 0; i < 16; ++i) m.at(7, 32 + i) = 1e-20f * static_cast<float>(i);
  const Bf16Tensor x = upload(m, "x");
  quantize_rtn(x.view(), {}, out, ws);
  expect_same(to_host(out), quant::quantize_rtn(MatrixRef(x.host, "x")), "rtn limits");
  quantize_four_over_six(x.view(), out, ws);
  expect_same(to_host(out), quant::quantize_four_over_six(MatrixRef(x.host, "x")), "4/6 limits");
  quantize_sr(x.view(), quant::kSrScaleOverride, 3, out, ws);
  expect_same(to_host(out), quant::quantize_sr(MatrixRef(x.host, "x"), quant::kSrScaleOverride, 3), "sr limits");
  quantize_rtn_16x16(x.view(), quant::kSquareBlockScaleMax, out, ws);
  expect_same(to_host(out), quant::quantize_rtn_16x16(MatrixRef(x.host, "x")), "16x16 limits");
}

TEST(GpuRtnFamily, RejectsNaNAndInfAndBadShapes) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (float bad : {NAN, INFINITY}) {
    Matrix m = random(64, 128, 3);
    m.at(63, 127) = bad;
    const Bf16Tensor x = upload(m, "W");
    const std::string msg = "tensor 'W' contains NaN or Inf (detected on the GPU)";
    expect_error([&] { quantize_rtn(x.view(), {}, out, ws); }, msg);
    expect_error([&] { quantize_four_over_six(x.view(), out, ws); }, msg);
    expect_error([&] { quantize_sr(x.view(), 1.0f, 1, out, ws); }, msg);
    expect_error([&] { quantize_rtn_16x16(x.view(), 447.99f, out, ws); }, msg);
  }
  const Bf16Tensor x = upload(random(24, 40, 1), "odd");
  expect_error([&] { quantize_rtn(x.view(), {}, out, ws); }, "tensor 'odd'");
  const Bf16Tensor y = upload(random(24, 48, 1), "rows24");
  expect_error([&] { quantize_rtn_16x16(y.view(), 447.99f, out, ws); }, "tensor 'rows24'");
}

TEST(GpuRtnFamily, ExpansionEqualsUnscaledDequantization) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const bool four_over_six : {false, true})
    for (const Shape s : kShapes)
      for (auto& [kind, m] : inputs(s.rows, s.cols, 81)) {
        const Bf16Tensor x = upload(m, "x");
        const std::string what = std::string(four_over_six ? "4/6 " : "rtn ") + kind + " " + shape(m);
        const NVFP4Tensor ref = four_over_six ? quant::quantize_four_over_six(MatrixRef(x.host, "x"))
                                              : quant::quantize_rtn(MatrixRef(x.host, "x"), quant::RtnConfig{});
        DeviceBuffer<__nv_bfloat16> expanded(m.size());
        amax_async(x.view(), ws);
        if (four_over_six)
          quantize_four_over_six_async(x.view(), ws.amax(), out, 0, expanded.get());
        else
          quantize_rtn_async(x.view(), ws.amax(), quant::RtnConfig{}, out, 0, expanded.get());
        expect_same(to_host(out), ref, what);
        expect_expansion(ref, expanded, what);
      }
}

// Float32 input (the master weights) quantizes exactly as its BF16 copy: amax, RTN,
// Four-over-Six with its expansion and 16x16, against the CPU reference on the rounded values.
// NaN, Inf and finite values that round to Inf are errors.
TEST(GpuF32Input, QuantizesAsItsBf16Copy) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  for (const Shape s : std::vector<Shape>{{1, 16}, {48, 80}, {384, 256}, {4096, 4096}})
    for (auto& [kind, m] : inputs(s.rows, s.cols, 61)) {
      const std::string what = kind + " " + shape(m);
      DeviceBuffer<float> dev(m.size());
      check(cudaMemcpy(dev.get(), m.data.data(), m.data.size() * 4, cudaMemcpyHostToDevice), "upload");
      const F32View x{dev.get(), m.rows, m.cols, "W"};
      const Matrix r = bf16::round(m);
      const MatrixRef ref(r, "W");

      amax_async(x, ws);
      ws.throw_if_nonfinite(x.name, 0);
      float a = 0.0f;
      check(cudaMemcpy(&a, ws.amax(), sizeof a, cudaMemcpyDeviceToHost), "reading amax");
      EXPECT_EQ(float_bits(a), float_bits(quant::checked_amax(ref))) << "amax " << what;

      quantize_rtn_async(x, ws.amax(), quant::RtnConfig{}, out);
      expect_same(to_host(out), quant::quantize_rtn(ref, quant::RtnConfig{}), "rtn " + what);
      DeviceBuffer<__nv_bfloat16> expanded(m.size());
      quantize_four_over_six_async(x, ws.amax(), out, 0, expanded.get());
      const NVFP4Tensor four_six = quant::quantize_four_over_six(ref);
      expect_same(to_host(out), four_six, "4/6 " + what);
      expect_expansion(four_six, expanded, "4/6 " + what);
      if (m.rows % 16 == 0) {
        quantize_rtn_16x16_async(x, ws.amax(), quant::kSquareBlockScaleMax, out);
        expect_same(to_host(out), quant::quantize_rtn_16x16(ref, quant::kSquareBlockScaleMax), "16x16 " + what);
      }
    }
  for (float bad : {NAN, INFINITY, 3.4e38f}) {  // 3.4e38 rounds to BF16 Inf
    Matrix m = random(384, 256, 3);
    m.at(200, 17) = bad;
    DeviceBuffer<float> dev(m.size());
    check(cudaMemcpy(dev.get(), m.data.data(), m.data.size() * 4, cudaMemcpyHostToDevice), "upload");
    const F32View x{dev.get(), m.rows, m.cols, "W"};
    expect_error(
        [&] {
          amax_async(x, ws);
          ws.throw_if_nonfinite(x.name, 0);
        },
        "tensor 'W' contains NaN or Inf (detected on the GPU)");
  }
}

}  // namespace
}  // namespace q2::cuda::test
