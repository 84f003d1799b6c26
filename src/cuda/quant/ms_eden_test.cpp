// ms_eden.cu (RHT-128 + MS-EDEN along rows) against the CPU reference (quant/ms_eden.cpp),
// bit for bit, and the tests of the whole MS-EDEN family (ms_eden.cu, ms_eden_transpose.cu,
// requant.cu): the BF16 expansion of pass 2, the NaN/Inf/shape errors and the stochastic-rounding
// fallback of dominated chunks. Every test skips without a GPU.
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
#include "quant/hadamard.h"
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

// MS-EDEN's stochastic-rounding fallback (quant::MsEdenConfig::eden_fallback): Gaussian rows
// whose 128-chunks, two in three, hold a spike of c sqrt(128) with c from 2 to 10 (outlier share
// c^2 / (c^2 + 1), 0.8 to 0.99: many near the threshold 0.9).
Matrix dominated(int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m = random(rows, cols, seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += 128) {
      const int64_t k = r * (cols / 128) + c0 / 128;
      if (k % 3 == 2) continue;
      const double c = 2.0 + 0.05 * static_cast<double>(k * 53 % 161);
      m.at(r, c0 + (k * 37) % 128) += static_cast<float>((k % 2 ? -c : c) * std::sqrt(128.0));
    }
  return m;
}

quant::MsEdenConfig with_fallback(double tau) {
  quant::MsEdenConfig cfg;
  cfg.eden_fallback = tau;
  return cfg;
}

// The CPU's decisions on x's chunks along rows: how many fall back.
int64_t fallbacks(const Matrix& x, double tau) {
  int64_t n = 0;
  for (int64_t r = 0; r < x.rows; ++r)
    for (int64_t c0 = 0; c0 < x.cols; c0 += 128) n += quant::eden_falls_back(quant::chunk_energy(x.row(r) + c0, 128), tau);
  return n;
}

// The decision (the chunk's outlier share before the rotation, in the CPU's order), the
// stochastic rounding of the chunks that fall back and EDEN elsewhere, bit for bit, in the three
// MS-EDEN kernels, the rows kernel fused and (8192 x 12288) as two kernels.
TEST(GpuMsEdenFallback, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const double tau = 0.9;
  const quant::Rht r(128, 2024);
  for (const Shape s : std::vector<Shape>{{7, 384}, {384, 256}, {640, 1024}, {8192, 12288}}) {
    const Bf16Tensor x = upload(dominated(s.rows, s.cols, 61), "dY");
    const int64_t n = fallbacks(x.host, tau), chunks = x.host.size() / 128;
    EXPECT_GT(n, chunks / 4) << shape(x.host);
    EXPECT_LT(n, chunks * 3 / 4) << shape(x.host);
    const NVFP4Tensor ref = quant::quantize_ms_eden(MatrixRef(x.host, "dY"), r, 7, with_fallback(tau));
    DeviceBuffer<__nv_bfloat16> expanded(x.host.size());
    quantize_ms_eden_async(x.view(), r, 7, out, ws, 0, expanded.get(), {}, tau);
    ws.throw_if_nonfinite(x.name, 0);
    expect_same(to_host(out), ref, "rows " + shape(x.host));
    expect_expansion(ref, expanded, "rows " + shape(x.host));
  }
  for (const Shape s : std::vector<Shape>{{128, 40}, {384, 256}, {1024, 640}}) {
    const Bf16Tensor x = upload(transpose(dominated(s.cols, s.rows, 71)), "x");  // chunks along x's rows
    const Matrix xt = transpose(x.host);
    EXPECT_GT(fallbacks(xt, tau), 0) << shape(x.host);
    quantize_ms_eden_transposed(x.view(), r, 8, out, ws, 0, tau);
    expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(xt, "xt"), r, 8, with_fallback(tau)),
                "transposed " + shape(x.host));
  }
  for (const Shape s : std::vector<Shape>{{128, 32}, {384, 256}, {1024, 800}}) {
    const Matrix m = transpose(dominated(s.cols, s.rows, 81));
    const NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(m, "x"));
    const DeviceNVFP4 da = to_device(a);
    const Matrix at = transpose(a.dequantize());
    EXPECT_GT(fallbacks(at, tau), 0) << shape(m);
    requantize_ms_eden_transposed(da, "xq", r, 9, out, ws, 0, tau);
    expect_same(to_host(out), quant::quantize_ms_eden(MatrixRef(at, "xq^T"), r, 9, with_fallback(tau)),
                "requant " + shape(m));
  }
}

// Two rounds of rotation (EdenRotation: `first`, then r, each rounded to float32) in the three
// MS-EDEN kernels, the rows kernel fused and (8192 x 12288) as two kernels, against the CPU
// layer's quantize_ms_eden(rht_forward(x, first), r). With the fallback they have no kernels.
TEST(GpuMsEdenTwoRounds, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  const quant::Rht first(128, 4048), r(128, 2024);
  const EdenRotation both(first, r);
  auto cpu = [&](const Matrix& m, uint64_t seed) {
    const Matrix pre = quant::rht_forward(MatrixRef(m, "in"), first);
    return quant::quantize_ms_eden(MatrixRef(pre, "in"), r, seed);
  };
  for (const Shape s : std::vector<Shape>{{7, 384}, {384, 256}, {8192, 12288}}) {
    const Bf16Tensor x = upload(dominated(s.rows, s.cols, 62), "dY");
    const NVFP4Tensor ref = cpu(x.host, 7);
    DeviceBuffer<__nv_bfloat16> expanded(x.host.size());
    quantize_ms_eden_async(x.view(), both, 7, out, ws, 0, expanded.get());
    ws.throw_if_nonfinite(x.name, 0);
    expect_same(to_host(out), ref, "rows " + shape(x.host));
    expect_expansion(ref, expanded, "rows " + shape(x.host));
  }
  for (const Shape s : std::vector<Shape>{{128, 40}, {1024, 640}}) {
    const Bf16Tensor x = upload(transpose(dominated(s.cols, s.rows, 72)), "x");
    quantize_ms_eden_transposed(x.view(), both, 8, out, ws);
    expect_same(to_host(out), cpu(transpose(x.host), 8), "transposed " + shape(x.host));
  }
  for (const Shape s : std::vector<Shape>{{128, 32}, {1024, 800}}) {
    const Matrix m = transpose(dominated(s.cols, s.rows, 82));
    const NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(m, "x"));
    const DeviceNVFP4 da = to_device(a);
    requantize_ms_eden_transposed(da, "xq", both, 9, out, ws);
    expect_same(to_host(out), cpu(transpose(a.dequantize()), 9), "requant " + shape(m));
    expect_error([&] { requantize_ms_eden_transposed(da, "xq", both, 9, out, ws, 0, 0.9); }, "two rounds");
  }
  const Bf16Tensor x = upload(random(128, 256, 5), "dY");
  expect_error([&] { quantize_ms_eden(x.view(), both, 5, out, ws, 0, 0.9); }, "two rounds");
  expect_error([&] { quantize_ms_eden_transposed(x.view(), both, 5, out, ws, 0, 0.9); }, "two rounds");
  expect_error([&] { quantize_ms_eden(x.view(), EdenRotation(quant::Rht(64, 1), r), 5, out, ws); }, "64-point");
}

// Chunks whose share is exactly 1/2 (squares 4 against 4, summed without rounding): at tau = 1/2
// none falls back, at the next double below every one does, on the GPU as on the CPU.
TEST(GpuMsEdenFallback, DecidesExactlyAtTheThreshold) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceNVFP4 out;
  Matrix m(256, 512);
  const float v[9] = {2, 1.5f, 1, 0.5f, 0.5f, 0.25f, 0.25f, 0.25f, 0.25f};
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c0 = 0; c0 < m.cols; c0 += 128)
      for (int j = 0; j < 9; ++j) m.at(r, c0 + (r * 5 + c0 / 128 * 11 + 14 * j) % 128) = (j + r) % 2 ? -v[j] : v[j];
  const quant::Rht r(128, 3);
  const Bf16Tensor x = upload(m, "dY");
  const Matrix mt = transpose(m);
  const Bf16Tensor xt = upload(mt, "x");
  const NVFP4Tensor none = quant::quantize_ms_eden(MatrixRef(m, "dY"), r, 5, with_fallback(0.5)),
                    all = quant::quantize_ms_eden(MatrixRef(m, "dY"), r, 5, with_fallback(std::nextafter(0.5, 0.0)));
  ASSERT_NE(none.packed, all.packed);  // the decision shows in the codes
  for (double tau : {0.5, std::nextafter(0.5, 0.0)}) {
    EXPECT_EQ(fallbacks(m, tau), tau == 0.5 ? 0 : m.size() / 128);
    const NVFP4Tensor& ref = tau == 0.5 ? none : all;
    quantize_ms_eden(x.view(), r, 5, out, ws, 0, tau);
    expect_same(to_host(out), ref, "rows, tau " + std::to_string(tau));
    quantize_ms_eden_transposed(xt.view(), r, 5, out, ws, 0, tau);
    expect_same(to_host(out), ref, "transposed, tau " + std::to_string(tau));
  }
  for (double tau : {-0.5, 1.0}) {
    expect_error([&] { quantize_ms_eden(x.view(), r, 5, out, ws, 0, tau); }, "eden_fallback");
    expect_error([&] { quantize_ms_eden_transposed(xt.view(), r, 5, out, ws, 0, tau); }, "eden_fallback");
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
