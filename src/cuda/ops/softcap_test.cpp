// GPU logit softcap (softcap.cu) against the CPU reference: the forward within u (CUDA's tanhf
// and glibc's may differ in the last float bit before the BF16 rounding), the backward the CPU's
// float32 result rounded once to BF16, bit for bit; large logits saturate at +-cap, never NaN.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/error.h"
#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

// Logits ~ N(0, scale^2) [T, vocab], forward in place, then the backward from the GPU's capped
// logits (as the model does).
void check_softcap(int64_t T, int64_t vocab, float cap, double scale, uint64_t seed) {
  const std::string what = "softcap [" + std::to_string(T) + ", " + std::to_string(vocab) + "] cap " +
                           std::to_string(cap) + " scale " + std::to_string(scale);
  const Matrix z = random_bf16(T, vocab, seed, scale);
  auto gz = to_dev_bf16(z);
  softcap_forward(gz.get(), T * vocab, cap);
  Matrix rz = z;
  model::cpu::softcap_forward(rz, cap);
  const Matrix capped = from_dev(gz, T, vocab);
  expect_close(capped, rz, kU * 1.001, 0, what + " forward");  // fails on NaN too
  for (int64_t i = 0; i < capped.size(); ++i)
    ASSERT_LE(std::fabs(capped.data[i]), cap) << what << ": element " << i << " beyond the cap";

  const Matrix dz = random_bf16(T, vocab, seed + 1);
  auto gdz = to_dev_bf16(dz);
  softcap_backward(gdz.get(), gz.get(), T * vocab, cap);
  Matrix rdz = dz;
  model::cpu::softcap_backward(rdz, capped, cap);
  const Matrix gdzm = from_dev(gdz, T, vocab);
  expect_bits_equal(gdzm, q2::bf16::round(rdz), what + " backward");
  expect_finite(gdzm, what + " backward");
}

TEST(GpuSoftcap, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  check_softcap(3 * 128 + 7, 1000, 15.0f, 10.0, 160);  // a vocabulary of 1000: 16-byte body only
  check_softcap(37, 1001, 15.0f, 10.0, 162);           // odd vocabulary: body and scalar tail
  check_softcap(1, 7, 30.0f, 50.0, 164);               // tail only
  check_softcap(64, 512, 15.0f, 1e30, 166);            // large logits: saturated at +-cap
  check_softcap(64, 512, 15.0f, 1e-30, 168);           // tiny logits: the identity
}

TEST(GpuSoftcap, RefusesANonPositiveCap) {
  REQUIRE_GPU();
  DeviceBuffer<bf16> z(8);
  EXPECT_THROW(softcap_forward(z.get(), 8, 0.0f), Error);
  EXPECT_THROW(softcap_backward(z.get(), z.get(), 8, -1.0f), Error);
}

}  // namespace
}  // namespace q2::cuda::ops::test
