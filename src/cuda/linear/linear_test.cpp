// The cuBLASLt GEMM wrapper against a float64 reference, and the CUDA linear layer against the
// CPU one (model::make_cpu_backend's linear::Linear): identical quantized operands for the
// same seed, outputs and gradients within the BF16 output rounding. Every test skips when no
// CUDA device is present (not part of ctest).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "cuda/gemm/gemm.h"
#include "cuda/linear/linear.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/tensor.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16_matrix.h"
#include "gemm/gemm.h"
#include "linear/linear.h"
#include "linear/outlier_split.h"
#include "model/backend.h"
#include "quant/distributions.h"

namespace q2::cuda {
namespace {

using ::q2::cuda::test::expect_same;

using model::DType;
using model::Tensor;

Matrix random(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  return quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed, scale);
}

using test::upload;

Matrix download(const Tensor& t) {
  check(cudaDeviceSynchronize(), "download");
  Matrix m(t.rows, t.cols);
  if (t.dtype == DType::kF32) {
    check(cudaMemcpy(m.data.data(), t.data, m.data.size() * 4, cudaMemcpyDeviceToHost), "download");
  } else {
    std::vector<uint16_t> bits(m.data.size());
    check(cudaMemcpy(bits.data(), t.data, bits.size() * 2, cudaMemcpyDeviceToHost), "download");
    for (size_t i = 0; i < bits.size(); ++i) m.data[i] = bf16::decode(bits[i]);
  }
  return m;
}

Matrix pad_rows(const Matrix& m, int64_t rows) {
  Matrix p(rows, m.cols);
  std::copy(m.data.begin(), m.data.end(), p.data.begin());
  return p;
}

// Relative Frobenius error and cosine of a against the reference b.
struct Closeness {
  double rel, cosine;
};
Closeness closeness(const Matrix& a, const Matrix& b) {
  double d = 0, aa = 0, bb = 0, ab = 0;
  for (size_t i = 0; i < a.data.size(); ++i) {
    const double x = a.data[i], y = b.data[i];
    d += (x - y) * (x - y);
    aa += x * x;
    bb += y * y;
    ab += x * y;
  }
  return {std::sqrt(d / bb), ab / std::sqrt(aa * bb)};
}

// ---- GEMM wrapper ----------------------------------------------------------------------------

TEST(GpuGemm, MatchesFloat64ReferenceForEveryLayout) {
  REQUIRE_GPU();
  const int64_t M = 40, N = 24, K = 72;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int f32 = 0; f32 < 2; ++f32)
        for (int acc = 0; acc < 2; ++acc)
          for (int dev_alpha = 0; dev_alpha < 2; ++dev_alpha) {
            const std::string what = "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " f32=" +
                                     std::to_string(f32) + " acc=" + std::to_string(acc) + " dev_alpha=" +
                                     std::to_string(dev_alpha);
            const uint64_t seed = static_cast<uint64_t>(ta * 16 + tb * 8 + f32 * 4 + acc * 2 + dev_alpha);
            const Matrix a = bf16::round(random(ta ? K : M, ta ? M : K, 100 + seed));
            const Matrix b = bf16::round(random(tb ? N : K, tb ? K : N, 200 + seed));
            const Matrix c = bf16::round(random(M, N, 300 + seed));
            const float alpha = 0.375f;
            const DType out = f32 ? DType::kF32 : DType::kBF16;
            const Tensor da = upload(a, DType::kBF16), db = upload(b, DType::kBF16);
            Tensor dd = upload(c, out);
            DeviceBuffer<float> alpha_dev(1);
            check(cudaMemcpy(alpha_dev.get(), &alpha, 4, cudaMemcpyHostToDevice), "alpha");
            blas::Matmul p;
            p.a = static_cast<const __nv_bfloat16*>(da.data);
            p.trans_a = ta;
            p.b = static_cast<const __nv_bfloat16*>(db.data);
            p.trans_b = tb;
            p.d = dd.data;
            p.d_type = f32 ? blas::OutType::kF32 : blas::OutType::kBF16;
            p.m = M;
            p.n = N;
            p.k = K;
            p.accumulate = acc;
            if (dev_alpha)
              p.alpha.device = alpha_dev.get();
            else
              p.alpha.host = alpha;
            blas::matmul(p);
            const Matrix got = download(dd);
            int bad = 0;
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) {
                double ref = 0, mag = 0;
                for (int64_t k = 0; k < K; ++k) {
                  const double x = ta ? a.at(k, i) : a.at(i, k), y = tb ? b.at(j, k) : b.at(k, j);
                  ref += x * y;
                  mag += std::fabs(x * y);
                }
                ref = alpha * ref + (acc ? c.at(i, j) : 0.0);
                mag = alpha * mag + (acc ? std::fabs(c.at(i, j)) : 0.0);
                // float32 accumulation (K terms, 2^-24 each, far below 1e-5) plus, for BF16 D,
                // the output's rounding (half an ulp, 2^-9 relative); when accumulating into a
                // BF16 D, cuBLASLt may also round alpha op(A) op(B) to BF16 before adding C
                // (seen on H100: one ulp off), a second 2^-9 of |alpha AB| <= mag.
                const double tol = (f32 ? 0.0 : std::ldexp(std::fabs(ref) + (acc ? mag : 0.0), -8)) + 1e-5 * mag;
                if (std::fabs(got.at(i, j) - ref) > tol && bad++ == 0)
                  ADD_FAILURE() << what << ": D[" << i << "][" << j << "] = " << got.at(i, j) << ", reference " << ref;
              }
            EXPECT_EQ(bad, 0) << what;
          }
}

// ---- linear layer vs the CPU -------------------------------------------------------------------

constexpr int64_t kM = 200, kK = 256, kN = 384;  // M is no multiple of 128 or 16: padding path

struct Outputs {
  Matrix y, dx, dw;
};

struct Inputs {
  Matrix x, w, w_bf16, dy;  // x, dy BF16-exact; w float32 master; w_bf16 what the GPU quantizes
  Inputs()
      : x(bf16::round(random(kM, kK, 1))),
        w(random(kN, kK, 2, 1.0 / 16)),
        w_bf16(bf16::round(w)),
        dy(bf16::round(random(kM, kN, 3, 1e-2))) {}
};

Outputs run_cpu(const linear::Scheme& s, const Inputs& in, uint64_t seed) {
  auto cpu = model::make_cpu_backend();
  auto op = cpu->make_linear(s, "layer");
  Tensor x = cpu->alloc(kM, kK, model::Role::kActivation), w = cpu->alloc(kN, kK, model::Role::kParam),
         dy = cpu->alloc(kM, kN, model::Role::kActivation), dw = cpu->alloc(kN, kK, model::Role::kParam);
  cpu->upload(in.x, x);
  cpu->upload(in.w_bf16, w);
  cpu->upload(in.dy, dy);
  Outputs r;
  r.y = cpu->download(op->forward(x, w, true));
  r.dx = cpu->download(op->backward(dy, seed, dw));
  r.dw = cpu->download(dw);
  return r;
}

Outputs run_gpu(CudaLinear& op, const Inputs& in, uint64_t seed) {
  const Tensor x = upload(in.x, DType::kBF16), w = upload(in.w, DType::kF32), dy = upload(in.dy, DType::kBF16);
  Tensor dw = device_tensor(kN, kK, DType::kF32);
  Outputs r;
  r.y = download(op.forward(x, w, true));
  r.dx = download(op.backward(dy, seed, dw));
  r.dw = download(dw);
  return r;
}

// y and dx leave the GPU in BF16 (half an ulp, 2^-9 relative per element: about 1.1e-3 in
// relative Frobenius norm for smooth data), dw in float32; the products are otherwise the
// same exact products in float32, summed in another order (~1e-6).
void expect_close(const Outputs& gpu, const Outputs& cpu, const std::string& what) {
  const Closeness y = closeness(gpu.y, cpu.y), dx = closeness(gpu.dx, cpu.dx), dw = closeness(gpu.dw, cpu.dw);
  EXPECT_LT(y.rel, 3e-3) << what << " y";
  EXPECT_LT(dx.rel, 3e-3) << what << " dx";
  EXPECT_LT(dw.rel, 1e-4) << what << " dw";
  EXPECT_GE(dx.cosine, 0.999) << what << " dx";
  EXPECT_GE(dw.cosine, 0.999) << what << " dw";
}

TEST(GpuLinear, Bf16MatchesCpu) {
  REQUIRE_GPU();
  const Inputs in;
  const linear::Scheme s = linear::scheme_by_name("bf16");
  auto op = make_cuda_linear(s, "layer");
  expect_close(run_gpu(*op, in, 7), run_cpu(s, in, 7), "bf16");
  EXPECT_EQ(op->saved_bytes(), static_cast<size_t>(kM * kK * 2));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(op->quantized(static_cast<linear::OperandId>(i)), nullptr);
}

// Forward-only schemes keep only X_q and W_q; their BF16 backward reads those values.
TEST(GpuLinear, ForwardOnlySchemesMatchCpu) {
  REQUIRE_GPU();
  const Inputs in;
  for (const char* name : {"quartet2_fwd", "nvidia_fwd"}) {
    const linear::Scheme s = linear::scheme_by_name(name);
    auto op = make_cuda_linear(s, "layer");
    expect_close(run_gpu(*op, in, 3), run_cpu(s, in, 3), name);
  }
}

// Every quantized operand of scheme s bit-identical to the CPU layer's, the outputs close.
void expect_operands_match_cpu(const linear::Scheme& s, const Inputs& in = Inputs()) {
  const uint64_t seed = 11;
  auto op = make_cuda_linear(s, "layer");
  const Outputs gpu = run_gpu(*op, in, seed);
  expect_close(gpu, run_cpu(s, in, seed), s.name);
  auto host = [&](linear::OperandId which) {
    const DeviceNVFP4* t = op->quantized(which);
    return t ? to_host(*t) : NVFP4Tensor();
  };

  // Forward operands: the CPU layer's own quantizers on the padded input and bf16(w).
  const auto cpu_gemm = gemm::make_cpu_backend();
  const linear::Linear lin(s, *cpu_gemm, "layer");
  const int64_t Mp = lin.plan().padded_rows(kM);
  const Matrix xp = pad_rows(in.x, Mp);
  const gemm::OwnedOperand xq = lin.forward_x(xp), wq = lin.forward_w(in.w_bf16);
  if (xq.fp4) expect_same(host(linear::OperandId::kFwdX), *xq.fp4, s.name + " forward X");
  if (wq.fp4) expect_same(host(linear::OperandId::kFwdW), *wq.fp4, s.name + " forward W");

  // Backward operands: the CPU layer's own, from what its forward saved, for the same seed.
  linear::Saved saved;
  lin.forward(xp, in.w_bf16, saved);
  const Matrix e = pad_rows(in.dy, Mp);
  const linear::Plan& p = lin.plan();
  for (const linear::BackwardOperand* o : {&p.dgrad.a, &p.dgrad.b, &p.wgrad.a, &p.wgrad.b}) {
    const std::string what = s.name + " " + linear::to_string(o->id);
    const bool split = p.wgrad.outlier_split > 0 && (o == &p.wgrad.a || o == &p.wgrad.b);
    const Matrix source = split ? lin.backward_source(*o, e, saved) : Matrix();
    const gemm::OwnedOperand cpu =
        split ? lin.quantize_backward(
                    *o, linear::without_dominated(source, linear::find_dominated(source, 128, p.wgrad.outlier_split)),
                    seed)
              : lin.backward_operand(*o, e, saved, seed);
    ASSERT_TRUE(cpu.fp4) << what;
    if (o->quant == linear::BwdQuant::kForward)  // the GPU's is W_q as stored, [N, K]
      expect_same(transpose_square_blocks(host(o->id), "gpu W_q"), *cpu.fp4, what);
    else
      expect_same(host(o->id), *cpu.fp4, what);
  }
}

class GpuLinearQuantized : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuLinearQuantized, OperandsIdenticalAndGradientsCloseToCpu) {
  REQUIRE_GPU();
  expect_operands_match_cpu(linear::scheme_by_name(GetParam()));
}

// MS-EDEN's fallback on all four operands, both paths taken: a Gaussian 128-chunk's largest
// square holds 6 % of its energy at the median, so at 0.065 about 40 % of the full chunks fall
// back, and most of the token chunks that padding half fills.
TEST(GpuLinear, EdenFallbackOperandsIdenticalToCpu) {
  REQUIRE_GPU();
  linear::Scheme s = linear::scheme_by_name("quartet2", 0, 0.065);
  s.name = "quartet2 (eden_fallback 0.065)";
  expect_operands_match_cpu(s);
}

// Two rounds of rotation (method.hadamard_rounds = 2) on the four MS-EDEN operands.
TEST(GpuLinear, TwoHadamardRoundsOperandsIdenticalToCpu) {
  REQUIRE_GPU();
  linear::Scheme s = linear::scheme_by_name("quartet2", 0, 0, 2);
  s.name = "quartet2 (hadamard_rounds 2)";
  expect_operands_match_cpu(s);
}

// The outlier split (method.outlier_split) with two rounds, on inputs whose token 17 of each
// 128-token chunk is 40 times larger in every feature of X and dY, so that wgrad's chunks along
// tokens are dominated (a 0.93 share): the rests' operands, and dW with the exact terms.
TEST(GpuLinear, OutlierSplitOperandsIdenticalToCpu) {
  REQUIRE_GPU();
  Inputs in;
  for (int64_t t = 17; t < kM; t += 128) {
    for (int64_t k = 0; k < kK; ++k) in.x.at(t, k) = bf16::round(40 * in.x.at(t, k));
    for (int64_t n = 0; n < kN; ++n) in.dy.at(t, n) = bf16::round(40 * in.dy.at(t, n));
  }
  linear::Scheme s = linear::scheme_by_name("quartet2", 0, 0, 2);
  s.outlier_split = 0.9;
  s.name = "quartet2 (hadamard_rounds 2, outlier_split 0.9)";
  expect_operands_match_cpu(s, in);
}

// tetrajet2 requantizes the saved X_q / W_q (float32 values) and rotates dY along its rows.
INSTANTIATE_TEST_SUITE_P(Schemes, GpuLinearQuantized,
                         ::testing::Values("quartet2", "quartet2_no46", "nvidia", "sr", "tetrajet2", "tetrajet2_bwd"));

TEST(GpuLinear, QuantizedSavesLessThanBf16AndRepeatsBitForBit) {
  REQUIRE_GPU();
  const Inputs in;
  auto q = make_cuda_linear(linear::scheme_by_name("quartet2"), "q");
  auto b = make_cuda_linear(linear::scheme_by_name("bf16"), "b");
  const Outputs first = run_gpu(*q, in, 5), again = run_gpu(*q, in, 5);
  run_gpu(*b, in, 5);
  EXPECT_LT(q->saved_bytes() * 2, b->saved_bytes());  // 4.5 bits vs 16, rows padded 200 -> 256
  EXPECT_EQ(first.dx.data, again.dx.data);
  EXPECT_EQ(first.dw.data, again.dw.data);
}

// The FP4 tensor-core path computes the same exact products as the emulation, summed in another
// order. Without FP4 tensor cores (Hopper) it must refuse with a clear error.
TEST(GpuLinear, NativeFp4GemmAgreesWithEmulationWhereAvailable) {
  REQUIRE_GPU();
  if (!blas::has_native_nvfp4()) {
    DeviceNVFP4 a, b;
    a.ensure(128, 64);
    b.ensure(128, 64);
    test::expect_error([&] { blas::nvfp4_matmul(blas::Nvfp4Matmul{&a, &b, 128, 128, 64, nullptr,
                                                                  blas::OutType::kF32, b.tensor_scale.get()}); },
                       "no FP4 tensor cores");
    GTEST_SKIP() << "no FP4 tensor cores here: the native GEMM is compiled but not compared";
  }
  const Inputs in;
  const linear::Scheme s = linear::scheme_by_name("quartet2");
  auto emulated = make_cuda_linear(s, "emulated"), native = make_cuda_linear(s, "native", true);
  expect_close(run_gpu(*native, in, 3), run_gpu(*emulated, in, 3), "native vs emulated");
}

TEST(GpuLinear, UnsupportedSchemesAreNamed) {
  // fp32 needs float32 GEMMs; the SR/RTN kernels rotate 16- or 32-point chunks only, and once;
  // MS-EDEN's two rounds, and the outlier split, have no kernels with its fallback.
  struct Case {
    const char* name;
    int hadamard;
    double fallback;
    int rounds;
    const char* why;
  };
  for (const Case c : {Case{"fp32", 0, 0, 1, "float32 GEMMs"}, Case{"tetrajet2", 128, 0, 1, "16 or 32 points only"},
                       Case{"tetrajet2", 0, 0, 2, "MS-EDEN operands only"},
                       Case{"quartet2", 0, 0.5, 2, "eden_fallback with method.hadamard_rounds = 2"},
                       Case{"quartet2", 64, 0, 2, "outlier_split has GPU kernels for 128-token chunks"},
                       Case{"quartet2", 0, 0.5, 1, "outlier_split has GPU kernels for 128-token chunks"}}) {
    try {
      linear::Scheme s = linear::scheme_by_name(c.name, c.hadamard, c.fallback, c.rounds);
      if (std::string(c.why).find("outlier_split") != std::string::npos) s.outlier_split = 0.9;
      make_cuda_linear(s, "layer");
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + c.name + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.why), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace q2::cuda
