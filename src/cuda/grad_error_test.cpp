// `quartet2 grad-error --device cuda` (eval::grad_error on the CUDA backend's linear layer)
// against the same experiment on the CPU backend, on BF16 operands: the GPU's quantized operands
// equal the CPU's for the same seeds (GpuLinear.*), so what may differ is the GEMMs' summation
// order (float32, about 1e-6 relative per element of dW) and the GPU's BF16 Y and dX. Rounding an
// element to BF16 moves it by at most 2^-8 of itself, so it adds at most 2^-16 = 1.5e-5 to a
// relative squared error (2.75e-6 on average over the mantissas: what sr's unquantized forward
// shows, where the CPU's error is 6e-15); against a quantization error near 1e-2 it and its
// cross term stay within 2e-3 of it, a bound above 2^-16. Another seed's draws move a single
// draw's error by about half a percent on these 65k-element products, so the bounds below tell a
// different stream apart.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/runtime/test_util.h"
#include "eval/grad_error.h"

namespace q2::cuda {
namespace {

// |gpu - cpu| <= max(rel |cpu|, least): `least` decides only where the CPU's error is below
// what the GPU's rounding alone gives.
void expect_near(double gpu, double cpu, double rel, double least, const std::string& what) {
  EXPECT_LE(std::abs(gpu - cpu), std::max(rel * std::abs(cpu), least)) << what << ": GPU " << gpu << ", CPU " << cpu;
}

void expect_gpu_matches_cpu(const linear::Scheme& s) {
  const eval::LayerOperands ops = eval::round_to_bf16(eval::default_operands(256, 256, 256, 7));
  auto cpu = model::make_backend("cpu"), gpu = model::make_backend("cuda");
  const auto want = eval::grad_error(ops, s, 8, 3, *cpu), got = eval::grad_error(ops, s, 8, 3, *gpu);
  ASSERT_EQ(got.size(), want.size());
  for (size_t p = 0; p < got.size(); ++p) {
    const std::string what = s.name + " " + want[p].product;
    const double rel = want[p].product == "wgrad" ? 1e-4 : 2e-3;  // float32 dW; BF16 Y and dX
    // The forward's one deterministic Y: its rounding stands alone where the scheme's forward
    // is unquantized (sr); each backward draw's rounding is small against its quantization error.
    const double least = want[p].product == "fwd" ? std::ldexp(1.0, -16) : 0.0;
    expect_near(got[p].rel_err, want[p].rel_err, rel, least, what + " rel_err");
    expect_near(got[p].rel_err_mean, want[p].rel_err_mean, rel, least, what + " rel_err_mean");
    ASSERT_EQ(got[p].curve.size(), want[p].curve.size()) << what;
    for (size_t c = 0; c < got[p].curve.size(); ++c)
      expect_near(got[p].curve[c].rel_err_mean, want[p].curve[c].rel_err_mean, rel, least,
                  what + " mean of " + std::to_string(want[p].curve[c].draws));
  }
}

TEST(GpuGradError, AgreesWithTheCpuOnBf16Operands) {
  REQUIRE_GPU();
  expect_gpu_matches_cpu(linear::scheme_by_name("quartet2"));
  expect_gpu_matches_cpu(linear::scheme_by_name("sr"));
  expect_gpu_matches_cpu(linear::scheme_by_name("nvidia"));
  linear::Scheme split = linear::scheme_by_name("quartet2", 0, 0, 2);
  split.outlier_split = 0.5;
  split.name = "quartet2 (hadamard_rounds 2, outlier_split 0.5)";
  expect_gpu_matches_cpu(split);
}

}  // namespace
}  // namespace q2::cuda
