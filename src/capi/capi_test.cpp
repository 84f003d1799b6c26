// The C API (include/quartet2/quartet2.h) on the CPU against the C++ library it wraps: the
// layer's outputs and gradients equal linear::Linear's for the same inputs and seed, bit for
// bit; quantize and dequantize equal src/quant's; every bad argument is a status with a message
// naming it. Only the C API is under test: the C++ library is the independent reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "format/scale_layout.h"
#include "gemm/gemm.h"
#include "linear/linear.h"
#include "quant/distributions.h"
#include "quant/rtn.h"
#include "quartet2/quartet2.h"

namespace q2 {
namespace {

Matrix random(int64_t rows, int64_t cols, uint64_t seed) {
  return quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed);
}

q2_tensor tensor(Matrix& m, q2_dtype dtype = Q2_FLOAT32, q2_device device = Q2_DEVICE_CPU) {
  return q2_tensor{m.data.data(), m.rows, m.cols, dtype, device};
}

std::string error() { return q2_last_error(); }
bool says(const std::string& what) { return error().find(what) != std::string::npos; }

// Owns a layer and frees it.
struct Layer {
  q2_linear* p = nullptr;
  ~Layer() { q2_linear_destroy(p); }
};
struct Context {
  q2_context* p = nullptr;
  ~Context() { q2_context_destroy(p); }
};

// linear::Linear on tokens padded with zero rows to the plan's multiple, as a layer pads them.
struct Reference {
  Matrix y, dx, dw;
  size_t saved_bytes = 0;
};
Reference reference(const std::string& scheme, const Matrix& x, const Matrix& w, const Matrix& dy, uint64_t seed) {
  const std::unique_ptr<gemm::Backend> g = gemm::make_cpu_backend();
  const linear::Linear lin(linear::scheme_by_name(scheme), *g);
  auto pad = [&](const Matrix& m) {
    Matrix p(lin.plan().padded_rows(m.rows), m.cols);
    std::copy(m.data.begin(), m.data.end(), p.data.begin());
    return p;
  };
  linear::Saved saved;
  Reference r;
  r.y = first_rows(lin.forward(pad(x), w, saved), x.rows);
  r.saved_bytes = saved.x.bytes();
  linear::Grads grads = lin.backward(pad(dy), saved, seed);
  r.dx = first_rows(std::move(grads.dx), x.rows);
  r.dw = std::move(grads.dw);
  return r;
}

class CapiLinear : public ::testing::TestWithParam<const char*> {};

TEST_P(CapiLinear, ForwardAndBackwardEqualTheCppLayerBitForBit) {
  const std::string scheme = GetParam();
  const int64_t tokens = 200, in = 128, out = 256;  // 200 tokens: padded to 256 where the scheme rotates
  const uint64_t seed = 0x5eed;
  Matrix x = random(tokens, in, 1), w = random(out, in, 2), dy = random(tokens, out, 3), dw0 = random(out, in, 4);
  const Reference ref = reference(scheme, x, w, dy, seed);

  Layer layer;
  ASSERT_EQ(q2_linear_create(scheme.c_str(), in, out, Q2_DEVICE_CPU, &layer.p), Q2_OK) << error();
  Matrix y(tokens, out), dx(tokens, in), dw = dw0;
  const q2_tensor xt = tensor(x), wt = tensor(w), yt = tensor(y), dyt = tensor(dy), dxt = tensor(dx), dwt = tensor(dw);
  Context ctx;
  ASSERT_EQ(q2_linear_forward(layer.p, &xt, &wt, &yt, &ctx.p, nullptr), Q2_OK) << error();
  EXPECT_EQ(y.data, ref.y.data);
  size_t saved = 0;
  ASSERT_EQ(q2_context_saved_bytes(ctx.p, &saved), Q2_OK) << error();
  EXPECT_EQ(saved, ref.saved_bytes);

  ASSERT_EQ(q2_linear_backward(ctx.p, &dyt, seed, &dxt, &dwt, nullptr), Q2_OK) << error();
  EXPECT_EQ(dx.data, ref.dx.data);
  Matrix want_dw = dw0;  // accumulated: dw0 + dW, one float addition per element
  for (size_t i = 0; i < want_dw.data.size(); ++i) want_dw.data[i] += ref.dw.data[i];
  EXPECT_EQ(dw.data, want_dw.data);
}

INSTANTIATE_TEST_SUITE_P(Schemes, CapiLinear,
                         ::testing::Values("quartet2", "quartet2_no46", "nvidia", "sr", "tetrajet2", "bf16", "fp32"));

TEST(CapiLinear, ForwardWithoutContextAndRepeatedBackwardAgree) {
  const int64_t tokens = 128, in = 128, out = 128;
  Matrix x = random(tokens, in, 5), w = random(out, in, 6), dy = random(tokens, out, 7);
  Layer layer;
  ASSERT_EQ(q2_linear_create("quartet2", in, out, Q2_DEVICE_CPU, &layer.p), Q2_OK) << error();
  Matrix y1(tokens, out), y2(tokens, out);
  const q2_tensor xt = tensor(x), wt = tensor(w), y1t = tensor(y1), y2t = tensor(y2), dyt = tensor(dy);
  Context ctx;
  ASSERT_EQ(q2_linear_forward(layer.p, &xt, &wt, &y1t, &ctx.p, nullptr), Q2_OK) << error();
  ASSERT_EQ(q2_linear_forward(layer.p, &xt, &wt, &y2t, nullptr, nullptr), Q2_OK) << error();
  EXPECT_EQ(y1.data, y2.data);

  auto grads = [&](uint64_t seed) {
    Matrix dw(out, in);
    const q2_tensor dwt = tensor(dw);
    EXPECT_EQ(q2_linear_backward(ctx.p, &dyt, seed, nullptr, &dwt, nullptr), Q2_OK) << error();  // dx not wanted
    return dw.data;
  };
  EXPECT_EQ(grads(1), grads(1));
  EXPECT_NE(grads(1), grads(2));  // the seed draws the rotation and the rounding

  // A context outlives its layer.
  q2_linear_destroy(layer.p);
  layer.p = nullptr;
  EXPECT_EQ(grads(1), grads(1));
}

TEST(CapiLinear, InfoReportsTheSchemesShapeRules) {
  Layer q, b;
  ASSERT_EQ(q2_linear_create("quartet2", 64, 256, Q2_DEVICE_CPU, &q.p), Q2_OK) << error();
  ASSERT_EQ(q2_linear_create("bf16", 3, 5, Q2_DEVICE_CPU, &b.p), Q2_OK) << error();
  q2_linear_info i{};
  ASSERT_EQ(q2_linear_get_info(q.p, &i), Q2_OK);
  EXPECT_EQ(i.in_features, 64);
  EXPECT_EQ(i.out_features, 256);
  EXPECT_EQ(i.device, Q2_DEVICE_CPU);
  EXPECT_EQ(i.in_multiple, 16);
  EXPECT_EQ(i.out_multiple, 128);
  EXPECT_EQ(i.token_multiple, 128);
  EXPECT_EQ(i.borrows_input, 0);
  ASSERT_EQ(q2_linear_get_info(b.p, &i), Q2_OK);
  EXPECT_EQ(i.in_multiple, 1);
  EXPECT_EQ(i.out_multiple, 1);
  EXPECT_EQ(i.token_multiple, 1);
}

TEST(CapiNvfp4, QuantizeAndDequantizeEqualTheCppQuantizers) {
  Matrix x = random(40, 96, 8);
  const q2_tensor xt = tensor(x);
  for (const q2_quantizer which : {Q2_QUANT_RTN, Q2_QUANT_FOUR_OVER_SIX}) {
    const NVFP4Tensor want = which == Q2_QUANT_RTN ? quant::quantize_rtn(MatrixRef(x, "x"))
                                                   : quant::quantize_four_over_six(MatrixRef(x, "x"));
    for (const q2_scale_layout layout : {Q2_SCALES_ROW_MAJOR, Q2_SCALES_BLOCKED}) {
      const std::string what = std::string(which == Q2_QUANT_RTN ? "rtn" : "four_over_six") +
                               (layout == Q2_SCALES_BLOCKED ? ", blocked" : ", row-major");
      size_t scale_bytes = 0;
      ASSERT_EQ(q2_nvfp4_scale_bytes(x.rows, x.cols, layout, &scale_bytes), Q2_OK) << error();
      std::vector<uint8_t> packed(x.size() / 2), scales(scale_bytes);
      float t = 0;
      const q2_nvfp4 q{packed.data(), scales.data(), &t, x.rows, x.cols, layout, Q2_DEVICE_CPU};
      ASSERT_EQ(q2_nvfp4_quantize(which, &xt, &q, nullptr), Q2_OK) << error();
      EXPECT_EQ(packed, want.packed) << what;
      EXPECT_EQ(scales, layout == Q2_SCALES_BLOCKED ? scales_to_blocked(want.scales, x.rows, x.cols / 16) : want.scales)
          << what;
      EXPECT_EQ(t, want.tensor_scale) << what;

      Matrix back(x.rows, x.cols);
      const q2_tensor bt = tensor(back);
      ASSERT_EQ(q2_nvfp4_dequantize(&q, &bt, nullptr), Q2_OK) << error();
      EXPECT_EQ(back.data, want.dequantize().data) << what;
    }
  }
}

// ---- bad arguments: a status and a message naming the problem --------------------------------

TEST(CapiErrors, CreateNamesTheProblem) {
  q2_linear* l = reinterpret_cast<q2_linear*>(1);
  EXPECT_EQ(q2_linear_create("fp3", 128, 128, Q2_DEVICE_CPU, &l), Q2_ERROR_UNKNOWN_SCHEME);
  EXPECT_EQ(l, nullptr);  // the output handle is cleared on failure
  EXPECT_TRUE(says("fp3") && says("quartet2")) << error();  // the known schemes are listed
  EXPECT_EQ(q2_linear_create(nullptr, 128, 128, Q2_DEVICE_CPU, &l), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("q2_linear_create: scheme is null")) << error();
  EXPECT_EQ(q2_linear_create("quartet2", 128, 128, Q2_DEVICE_CPU, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("layer")) << error();
  EXPECT_EQ(q2_linear_create("quartet2", 128, 100, Q2_DEVICE_CPU, &l), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("out_features a multiple of 128") && says("out_features = 100")) << error();
  EXPECT_EQ(q2_linear_create("quartet2", 24, 128, Q2_DEVICE_CPU, &l), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("in_features a multiple of 16") && says("in_features = 24")) << error();
  EXPECT_EQ(q2_linear_create("nvidia", 128, 24, Q2_DEVICE_CPU, &l), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("out_features a multiple of 16")) << error();
  EXPECT_EQ(q2_linear_create("quartet2", 0, 128, Q2_DEVICE_CPU, &l), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("in_features = 0")) << error();
  EXPECT_EQ(q2_linear_create("quartet2", 128, 128, static_cast<q2_device>(7), &l), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("device 7 is not a q2_device")) << error();
  // CUDA: absent from this build or this machine (where a GPU is present, the call succeeds).
  const q2_status s = q2_linear_create("quartet2", 128, 128, Q2_DEVICE_CUDA, &l);
  if (s == Q2_OK) {
    q2_linear_destroy(l);
  } else {
    EXPECT_EQ(s, Q2_ERROR_UNSUPPORTED);
    EXPECT_TRUE(says("device 'cuda'")) << error();
  }
}

TEST(CapiErrors, ForwardAndBackwardNameTheProblem) {
  const int64_t tokens = 16, in = 128, out = 128;
  Matrix x = random(tokens, in, 9), w = random(out, in, 10), y(tokens, out), dy = random(tokens, out, 11);
  Matrix dw(out, in), dx(tokens, in), narrow(tokens, 64), short_dy(8, out);
  Layer layer;
  ASSERT_EQ(q2_linear_create("quartet2", in, out, Q2_DEVICE_CPU, &layer.p), Q2_OK) << error();
  const q2_tensor xt = tensor(x), wt = tensor(w), yt = tensor(y), dyt = tensor(dy), dwt = tensor(dw);
  Context ctx;
  auto forward = [&](const q2_tensor* a, const q2_tensor* b, const q2_tensor* c) {
    return q2_linear_forward(layer.p, a, b, c, &ctx.p, nullptr);
  };

  EXPECT_EQ(q2_linear_forward(nullptr, &xt, &wt, &yt, nullptr, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("q2_linear_forward: layer is null")) << error();
  EXPECT_EQ(forward(nullptr, &wt, &yt), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("x is null")) << error();
  EXPECT_EQ(ctx.p, nullptr);
  q2_tensor bad = xt;
  bad.data = nullptr;
  EXPECT_EQ(forward(&bad, &wt, &yt), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("x.data is null")) << error();
  bad = xt;
  bad.device = Q2_DEVICE_CUDA;
  EXPECT_EQ(forward(&bad, &wt, &yt), Q2_ERROR_WRONG_DEVICE);
  EXPECT_TRUE(says("x is on device 'cuda' but the call runs on 'cpu'")) << error();
  bad = wt;
  bad.dtype = Q2_BFLOAT16;
  EXPECT_EQ(forward(&xt, &bad, &yt), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("w is bfloat16; on 'cpu' it must be float32")) << error();
  const q2_tensor nt = tensor(narrow);
  EXPECT_EQ(forward(&nt, &wt, &yt), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("x is [16, 64], expected [rows >= 1, 128]")) << error();
  EXPECT_EQ(forward(&xt, &wt, &nt), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("y is [16, 64], expected [16, 128]")) << error();
  EXPECT_EQ(forward(&xt, &wt, &xt), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("y overlaps x")) << error();
  Matrix nan_x = x;
  nan_x.at(3, 5) = std::nanf("");
  const q2_tensor nan_t = tensor(nan_x);
  EXPECT_EQ(forward(&nan_t, &wt, &yt), Q2_ERROR_FAILED);
  EXPECT_TRUE(says("NaN")) << error();

  ASSERT_EQ(forward(&xt, &wt, &yt), Q2_OK) << error();
  EXPECT_EQ(q2_linear_backward(nullptr, &dyt, 0, nullptr, &dwt, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("q2_linear_backward: ctx is null")) << error();
  EXPECT_EQ(q2_linear_backward(ctx.p, &dyt, 0, nullptr, nullptr, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("dw is null")) << error();
  const q2_tensor st = tensor(short_dy);
  EXPECT_EQ(q2_linear_backward(ctx.p, &st, 0, nullptr, &dwt, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("dy is [8, 128], expected [16, 128]")) << error();
  const q2_tensor wrong_dx = tensor(narrow);
  EXPECT_EQ(q2_linear_backward(ctx.p, &dyt, 0, &wrong_dx, &dwt, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("dx is [16, 64]")) << error();
  EXPECT_EQ(q2_linear_backward(ctx.p, &dyt, 0, &dyt, &dwt, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("dx overlaps dy")) << error();
  size_t n = 0;
  EXPECT_EQ(q2_context_saved_bytes(nullptr, &n), Q2_ERROR_NULL_POINTER);
  EXPECT_EQ(q2_linear_get_info(layer.p, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("info is null")) << error();
}

TEST(CapiErrors, QuantizeNamesTheProblem) {
  Matrix x = random(4, 24, 12), out(4, 32);
  std::vector<uint8_t> packed(64), scales(64);
  float t = 0;
  const q2_tensor xt = tensor(x);
  q2_nvfp4 q{packed.data(), scales.data(), &t, 4, 24, Q2_SCALES_ROW_MAJOR, Q2_DEVICE_CPU};
  EXPECT_EQ(q2_nvfp4_quantize(Q2_QUANT_RTN, &xt, &q, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("out is [4, 24]; NVFP4 needs rows >= 1 and cols a positive multiple of 16")) << error();
  q.cols = 32;
  EXPECT_EQ(q2_nvfp4_quantize(Q2_QUANT_RTN, &xt, &q, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("out is [4, 32] but x is [4, 24]")) << error();
  EXPECT_EQ(q2_nvfp4_quantize(static_cast<q2_quantizer>(9), &xt, &q, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("quantizer 9 is not a q2_quantizer")) << error();
  q.scales = nullptr;
  EXPECT_EQ(q2_nvfp4_quantize(Q2_QUANT_RTN, &xt, &q, nullptr), Q2_ERROR_NULL_POINTER);
  EXPECT_TRUE(says("out.scales is null")) << error();
  q.scales = scales.data();
  q.layout = static_cast<q2_scale_layout>(5);
  const q2_tensor ot = tensor(out);
  EXPECT_EQ(q2_nvfp4_dequantize(&q, &ot, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("in.layout 5 is not a q2_scale_layout")) << error();
  q.layout = Q2_SCALES_ROW_MAJOR;
  q.device = Q2_DEVICE_CUDA;
  const q2_status s = q2_nvfp4_dequantize(&q, &ot, nullptr);
  EXPECT_TRUE(s == Q2_ERROR_UNSUPPORTED || s == Q2_ERROR_WRONG_DEVICE) << error();  // no CUDA, or host memory
  size_t bytes = 0;
  EXPECT_EQ(q2_nvfp4_scale_bytes(4, 20, Q2_SCALES_BLOCKED, &bytes), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(says("[4, 20]")) << error();
}

TEST(CapiErrors, LastErrorIsPerThread) {
  q2_linear* l = nullptr;
  EXPECT_EQ(q2_linear_create("fp3", 128, 128, Q2_DEVICE_CPU, &l), Q2_ERROR_UNKNOWN_SCHEME);
  std::string other = "unset";
  std::thread([&] { other = q2_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_TRUE(says("fp3")) << error();
  EXPECT_EQ(q2_api_version(), Q2_API_VERSION);
}

}  // namespace
}  // namespace q2
