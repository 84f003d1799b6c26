// The C API's CUDA half against the CUDA layer it wraps (cuda::make_cuda_linear called
// directly): y, dx and dw bit for bit for the same inputs and seed, on a caller's non-blocking
// stream and with a BF16 weight; quantize against the CPU reference quantizer; device-memory
// checks. Every test skips without a CUDA device (not run on the CPU machines).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda/gemm/gemm.h"
#include "cuda/linear/linear.h"
#include "cuda/runtime/tensor.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16_matrix.h"
#include "format/scale_layout.h"
#include "quant/distributions.h"
#include "quant/rtn.h"
#include "quartet2/quartet2.h"

namespace q2::cuda {
namespace {

using model::DType;
using model::Tensor;

using test::upload;

std::vector<uint8_t> bytes(const Tensor& t) {
  check(cudaDeviceSynchronize(), "sync");
  std::vector<uint8_t> b(static_cast<size_t>(t.size()) * (t.dtype == DType::kF32 ? 4 : 2));
  check(cudaMemcpy(b.data(), t.data, b.size(), cudaMemcpyDeviceToHost), "download");
  return b;
}

q2_tensor c_view(const Tensor& t) {
  return q2_tensor{t.data, t.rows, t.cols, t.dtype == DType::kBF16 ? Q2_BFLOAT16 : Q2_FLOAT32, Q2_DEVICE_CUDA};
}

Matrix random(int64_t rows, int64_t cols, uint64_t seed) {
  return quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed);
}

class CapiCuda : public ::testing::TestWithParam<const char*> {};

TEST_P(CapiCuda, EqualsTheCudaLayerBitForBit) {
  REQUIRE_GPU();
  const std::string scheme = GetParam();
  const int64_t M = 200, K = 256, N = 384;
  const uint64_t seed = 77;
  const Matrix xm = random(M, K, 1), wm = random(N, K, 2), dym = random(M, N, 3);
  const Matrix wb = bf16::round(wm);  // BF16-exact, so a BF16 copy of the weight is the same weight
  const Tensor x = upload(xm, DType::kBF16), w = upload(wb, DType::kF32), w16 = upload(wb, DType::kBF16);
  const Tensor dy = upload(dym, DType::kBF16);

  // The layer itself.
  auto layer = make_cuda_linear(linear::scheme_by_name(scheme), "direct", blas::has_native_nvfp4());
  Tensor dw_direct = device_tensor(N, K, DType::kF32);
  const Tensor y_direct = layer->forward(x, w, true);
  const Tensor dx_direct = layer->backward(dy, seed, dw_direct);
  const std::vector<uint8_t> y_want = bytes(y_direct), dx_want = bytes(dx_direct), dw_want = bytes(dw_direct);

  // Through the C API, on a non-blocking stream of the caller, float32 and BF16 weights.
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  q2_linear* l = nullptr;
  ASSERT_EQ(q2_linear_create(scheme.c_str(), K, N, Q2_DEVICE_CUDA, &l), Q2_OK) << q2_last_error();
  for (const Tensor* weight : {&w, &w16}) {
    Tensor y = device_tensor(M, N, DType::kBF16), dx = device_tensor(M, K, DType::kBF16);
    Tensor dw = device_tensor(N, K, DType::kF32);
    const q2_tensor xt = c_view(x), wt = c_view(*weight), yt = c_view(y), dyt = c_view(dy), dxt = c_view(dx),
                    dwt = c_view(dw);
    q2_context* ctx = nullptr;
    ASSERT_EQ(q2_linear_forward(l, &xt, &wt, &yt, &ctx, stream), Q2_OK) << q2_last_error();
    ASSERT_EQ(q2_linear_backward(ctx, &dyt, seed, &dxt, &dwt, stream), Q2_OK) << q2_last_error();
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    EXPECT_EQ(bytes(y), y_want);
    EXPECT_EQ(bytes(dx), dx_want);
    EXPECT_EQ(bytes(dw), dw_want);
    // Without dx (the dgrad product skipped), the same dw.
    Tensor dw_only = device_tensor(N, K, DType::kF32);
    const q2_tensor dwot = c_view(dw_only);
    ASSERT_EQ(q2_linear_backward(ctx, &dyt, seed, nullptr, &dwot, stream), Q2_OK) << q2_last_error();
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    EXPECT_EQ(bytes(dw_only), dw_want);
    q2_context_destroy(ctx);
  }
  q2_linear_destroy(l);
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

INSTANTIATE_TEST_SUITE_P(Schemes, CapiCuda, ::testing::Values("quartet2", "nvidia", "tetrajet2", "bf16"));

TEST(CapiCuda, QuantizeEqualsTheCpuReference) {
  REQUIRE_GPU();
  const Matrix xm = bf16::round(random(96, 256, 4));
  const Tensor x = upload(xm, DType::kBF16);
  size_t scale_bytes = 0;
  ASSERT_EQ(q2_nvfp4_scale_bytes(xm.rows, xm.cols, Q2_SCALES_BLOCKED, &scale_bytes), Q2_OK);
  const NVFP4Tensor want = quant::quantize_four_over_six(MatrixRef(xm, "x"));
  DeviceBuffer<uint8_t> packed(xm.size() / 2), scales(static_cast<int64_t>(scale_bytes));
  DeviceBuffer<float> t(1);
  const q2_nvfp4 q{packed.get(), scales.get(), t.get(), xm.rows, xm.cols, Q2_SCALES_BLOCKED, Q2_DEVICE_CUDA};
  const q2_tensor xt = c_view(x);
  ASSERT_EQ(q2_nvfp4_quantize(Q2_QUANT_FOUR_OVER_SIX, &xt, &q, nullptr), Q2_OK) << q2_last_error();
  NVFP4Tensor got(xm.rows, xm.cols);
  std::vector<uint8_t> blocked(scale_bytes);
  check(cudaMemcpy(got.packed.data(), packed.get(), got.packed.size(), cudaMemcpyDeviceToHost), "packed");
  check(cudaMemcpy(blocked.data(), scales.get(), blocked.size(), cudaMemcpyDeviceToHost), "scales");
  check(cudaMemcpy(&got.tensor_scale, t.get(), 4, cudaMemcpyDeviceToHost), "tensor scale");
  got.scales = scales_from_blocked(blocked, got.rows, got.scale_cols());
  test::expect_same(got, want, "q2_nvfp4_quantize (cuda)");
}

TEST(CapiCuda, HostMemoryAndFloat32ActivationsAreRefused) {
  REQUIRE_GPU();
  q2_linear* l = nullptr;
  ASSERT_EQ(q2_linear_create("quartet2", 128, 128, Q2_DEVICE_CUDA, &l), Q2_OK) << q2_last_error();
  const Tensor x = upload(random(16, 128, 5), DType::kBF16), w = upload(random(128, 128, 6), DType::kF32);
  const Tensor y = device_tensor(16, 128, DType::kBF16);
  std::vector<uint16_t> host(16 * 128);
  const q2_tensor wt = c_view(w), yt = c_view(y);
  q2_tensor xt = c_view(x);
  xt.data = host.data();
  EXPECT_EQ(q2_linear_forward(l, &xt, &wt, &yt, nullptr, nullptr), Q2_ERROR_WRONG_DEVICE);
  EXPECT_NE(std::strstr(q2_last_error(), "x is host memory"), nullptr) << q2_last_error();
  xt = c_view(x);
  xt.dtype = Q2_FLOAT32;
  EXPECT_EQ(q2_linear_forward(l, &xt, &wt, &yt, nullptr, nullptr), Q2_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(q2_last_error(), "x is float32; on 'cuda' it must be bfloat16"), nullptr) << q2_last_error();
  q2_linear_destroy(l);
  q2_linear* fp32 = nullptr;
  EXPECT_EQ(q2_linear_create("fp32", 128, 128, Q2_DEVICE_CUDA, &fp32), Q2_ERROR_UNSUPPORTED);
  EXPECT_NE(std::strstr(q2_last_error(), "fp32"), nullptr) << q2_last_error();
}

}  // namespace
}  // namespace q2::cuda
