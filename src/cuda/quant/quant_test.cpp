// GPU quantization kernels against the CPU reference, bit for bit: packed codes, row-major
// scales (after unblocking) and the tensor scale. Every test skips when no CUDA device is
// present, so the binary is harmless on CPU-only machines (it is not part of ctest).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16.h"
#include "format/e4m3.h"
#include "quant/checks.h"
#include "quant/distributions.h"
#include "quant/ms_eden.h"
#include "quant/philox.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::cuda {
namespace testing {
unsigned long long e2m1_codec_mismatches(uint32_t* first_bad);
unsigned long long quotient_mismatches(uint32_t* first_bad);
unsigned long long expansion_mismatches(uint32_t* first_bad);
unsigned long long e4m3_codec_mismatches(uint32_t* first_bad);
unsigned long long e4m3_sr_mismatches(uint32_t* first_bad);
}

namespace {

using ::q2::cuda::test::expect_same;
using ::q2::cuda::test::expect_error;

// A BF16 tensor on the host (exact floats) and on the device.
struct Bf16Tensor {
  Matrix host;  // float(bf16) values: the CPU reference's input
  DeviceBuffer<__nv_bfloat16> dev;
  std::string name;

  BF16View view() const { return BF16View{dev.get(), host.rows, host.cols, name}; }
};

Bf16Tensor upload(const Matrix& values, const std::string& name) {
  Bf16Tensor t{Matrix(values.rows, values.cols), DeviceBuffer<__nv_bfloat16>(values.size()), name};
  std::vector<uint16_t> bits(static_cast<size_t>(values.size()));
  for (size_t i = 0; i < bits.size(); ++i) {
    bits[i] = bf16::encode(values.data[i]);
    t.host.data[i] = bf16::decode(bits[i]);
  }
  check(cudaMemcpy(t.dev.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), "upload");
  return t;
}

Matrix random(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0,
              quant::Dist dist = quant::Dist::kGaussian) {
  return quant::random_matrix(rows, cols, dist, seed, scale);
}

std::string shape(const Matrix& m) {
  std::string s = "[";
  s += std::to_string(m.rows);
  s += ", ";
  s += std::to_string(m.cols);
  s += "]";
  return s;
}

struct Shape {
  int64_t rows, cols;
};
const std::vector<Shape> kShapes = {{1, 16}, {3, 48}, {384, 256}, {640, 1024}, {130, 80}, {4096, 4096}};
const std::vector<Shape> kEdenShapes = {{1, 128}, {7, 384}, {384, 256}, {640, 1024}, {4096, 4096}};

// Inputs: Gaussian, heavy-tailed, huge (bf16 range), tiny (subnormal scales), zeros.
// `huge` stays where a 128-point rotation of Gaussian data cannot overflow float32 (its
// unnormalized sums reach ~50 sigma) for the MS-EDEN family.
std::vector<std::pair<std::string, Matrix>> inputs(int64_t rows, int64_t cols, uint64_t seed, double huge = 1e37) {
  std::vector<std::pair<std::string, Matrix>> v;
  v.emplace_back("gaussian", random(rows, cols, seed));
  v.emplace_back("student3", random(rows, cols, seed + 1, 3.0, quant::Dist::kStudent3));
  v.emplace_back("huge", random(rows, cols, seed + 2, huge));
  v.emplace_back("tiny", random(rows, cols, seed + 3, 1e-30));
  v.emplace_back("zeros", Matrix(rows, cols));
  return v;
}

TEST(FastCodec, E2m1RoundingEqualsReferenceForAllFiniteFloats) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e2m1_codec_mismatches(&first), 0ull) << "first mismatching float bits " << std::hex << first;
}

TEST(FastCodec, E4m3HardwareConversionsEqualReference) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e4m3_codec_mismatches(&first), 0ull) << "first mismatching float bits / code " << std::hex << first;
}

TEST(FastCodec, E4m3StochasticRoundingEqualsReferenceForAllNonNegativeFloats) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::e4m3_sr_mismatches(&first), 0ull) << "first mismatching float bits " << std::hex << first;
}

TEST(FastCodec, QuotientEqualsIeeeDivisionForAllBf16Numerators) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::quotient_mismatches(&first), 0ull) << "first mismatching divisor index " << first;
}

TEST(FastCodec, UnscaledExpansionEqualsReferenceForAllCodesAndScales) {
  REQUIRE_GPU();
  uint32_t first = 0;
  EXPECT_EQ(testing::expansion_mismatches(&first), 0ull)
      << "first mismatching scale << 6 | scale byte << 4 | code word " << std::hex << first;
}

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

// `got` (device, ref.rows * ref.cols BF16) is the CPU reference's unscaled dequantization of
// ref, bit for bit: the expansion a quantizer writes beside its codes for the emulated GEMM.
void expect_expansion(const NVFP4Tensor& ref, const DeviceBuffer<__nv_bfloat16>& got, const std::string& what) {
  std::vector<uint16_t> bits(static_cast<size_t>(ref.rows * ref.cols));
  check(cudaMemcpy(bits.data(), got.get(), bits.size() * 2, cudaMemcpyDeviceToHost), "download");
  std::vector<float> row(static_cast<size_t>(ref.cols));
  int64_t bad = 0;
  for (int64_t r = 0; r < ref.rows; ++r) {
    ref.dequantize_row_unscaled(r, row.data());
    for (int64_t c = 0; c < ref.cols; ++c)
      if (bits[static_cast<size_t>(r * ref.cols + c)] != bf16::encode(row[static_cast<size_t>(c)]) && bad++ == 0)
        ADD_FAILURE() << what << ": first expansion mismatch at (" << r << ", " << c << ")";
  }
  EXPECT_EQ(bad, 0) << what;
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
      Matrix r = m;
      for (float& v : r.data) v = bf16::round(v);
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

// Linked quantizers compute their product's alpha = t_a t_b, whichever finishes second, and a
// pair left half done (one quantizer only) does not confuse the next pair.
TEST(GpuAlphaLink, SecondQuantizerWritesTheProductOfBothTensorScales) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceBuffer<ScaleProduct> product(1);
  check(cudaMemset(product.get(), 0, product.bytes()), "cudaMemset");
  const quant::Rht r(128, 3);
  DeviceNVFP4 a, b;
  uint32_t generation = 0;
  for (int round = 0; round < 4; ++round) {
    const Bf16Tensor x = upload(random(256, 256, 40 + round, std::ldexp(1.0, 3 * round - 4)), "X");
    const Bf16Tensor e = upload(random(256, 256, 50 + round, std::ldexp(1.0, -2 * round)), "E");
    auto run_a = [&](AlphaLink link) {
      amax_async(x.view(), ws);
      quantize_four_over_six_async(x.view(), ws.amax(), a, 0, nullptr, link);
    };
    if (round == 2) run_a(AlphaLink{product.get(), 0, ++generation});  // its partner never runs
    ++generation;
    auto run_b = [&] {
      quantize_ms_eden_async(e.view(), r, 7, b, ws, 0, nullptr, AlphaLink{product.get(), 1, generation});
    };
    if (round % 2) {
      run_b();
      run_a(AlphaLink{product.get(), 0, generation});
    } else {
      run_a(AlphaLink{product.get(), 0, generation});
      run_b();
    }
    ScaleProduct got{};
    check(cudaMemcpy(&got, product.get(), sizeof got, cudaMemcpyDeviceToHost), "reading the product");
    const float ta = to_host(a).tensor_scale, tb = to_host(b).tensor_scale;
    EXPECT_EQ(float_bits(got.alpha), float_bits(ta * tb)) << "round " << round;
  }
}

// The same with the two quantizers on two streams, where they overlap and either may finish
// second: many pairs in a row, each checked.
TEST(GpuAlphaLink, QuantizersOnTwoStreams) {
  REQUIRE_GPU();
  Workspace wa, wb;  // one per stream
  DeviceBuffer<ScaleProduct> product(1);
  check(cudaMemset(product.get(), 0, product.bytes()), "cudaMemset");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cudaStream_t sa = nullptr, sb = nullptr;
  cudaEvent_t go = nullptr;
  check(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaStreamCreateWithFlags(&sb, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaEventCreateWithFlags(&go, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  const quant::Rht r(128, 3);
  DeviceNVFP4 a(2048, 2048), b(2048, 2048);
  const Bf16Tensor x[2] = {upload(random(2048, 2048, 70), "X"), upload(random(2048, 2048, 71, 1e3), "X")};
  const Bf16Tensor e[2] = {upload(random(2048, 2048, 72, 1e-3), "E"), upload(random(2048, 2048, 73), "E")};
  for (uint32_t generation = 1; generation <= 16; ++generation) {
    const BF16View xv = x[generation % 2].view(), ev = e[generation / 2 % 2].view();
    check(cudaEventRecord(go, 0), "cudaEventRecord");
    check(cudaStreamWaitEvent(sa, go, 0), "cudaStreamWaitEvent");
    check(cudaStreamWaitEvent(sb, go, 0), "cudaStreamWaitEvent");
    amax_async(xv, wa, sa);
    quantize_four_over_six_async(xv, wa.amax(), a, sa, nullptr, AlphaLink{product.get(), 0, generation});
    quantize_ms_eden_async(ev, r, generation, b, wb, sb, nullptr, AlphaLink{product.get(), 1, generation});
    check(cudaStreamSynchronize(sa), "cudaStreamSynchronize");
    check(cudaStreamSynchronize(sb), "cudaStreamSynchronize");
    ScaleProduct got{};
    check(cudaMemcpy(&got, product.get(), sizeof got, cudaMemcpyDeviceToHost), "reading the product");
    const float ta = to_host(a).tensor_scale, tb = to_host(b).tensor_scale;
    EXPECT_EQ(float_bits(got.alpha), float_bits(ta * tb)) << "pair " << generation;
  }
  cudaEventDestroy(go);
  cudaStreamDestroy(sb);
  cudaStreamDestroy(sa);
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
}  // namespace q2::cuda
