// GPU cross-entropy (cross_entropy.cu) against the CPU reference: loss and dlogits, in place too.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

using ::q2::cuda::test::expect_error;

TEST(GpuCrossEntropy, MatchesCpu) {
  REQUIRE_GPU();
  for (const int64_t vocab : {int64_t{50257}, int64_t{1000}, int64_t{37}}) {
    const int64_t T = 3 * 128 + 7;
    const Matrix logits = random_bf16(T, vocab, 100, 3.0);
    const std::vector<uint32_t> targets = random_ids(T, static_cast<uint32_t>(vocab), 101);
    const float scale = 1.0f / T;
    Matrix ref_grad(T, vocab);
    const double ref = model::cpu::cross_entropy(logits, targets, &ref_grad, scale);
    auto gl = to_dev_bf16(logits);
    auto gt = to_dev(targets);
    DeviceBuffer<bf16> grad(T * vocab);
    poison(grad);
    const double loss = cross_entropy(gl.get(), T, vocab, gt.get(), grad.get(), scale);
    const std::string what = "cross_entropy vocab=" + std::to_string(vocab);
    // Row losses in float32 (lse ~ 10: a few 1e-6 each).
    EXPECT_NEAR(loss, ref, 1e-6 * std::fabs(ref) + 1e-5 * T) << what;
    // p within ~1e-5 relative (float exp2 and lse), then one BF16 rounding; the target's
    // p * scale - scale cancels, hence the absolute term.
    expect_close(from_dev(grad, T, vocab), ref_grad, kU * 1.001, 1e-5 * scale, what + " dlogits");
    EXPECT_EQ(cross_entropy(gl.get(), T, vocab, gt.get(), nullptr, scale), loss) << what << ": not deterministic";
    // In place: dlogits overwrite the logits.
    cross_entropy(gl.get(), T, vocab, gt.get(), gl.get(), scale);
    expect_bits_equal(from_dev(gl, T, vocab), from_dev(grad, T, vocab), what + " in place");
  }
}

TEST(GpuCrossEntropy, RejectsOutOfRangeTargets) {
  REQUIRE_GPU();
  const int64_t T = 5, vocab = 11;
  auto gl = to_dev_bf16(random_bf16(T, vocab, 110));
  auto gt = to_dev(std::vector<uint32_t>{1, 2, 11, 3, 4});
  expect_error([&] { cross_entropy(gl.get(), T, vocab, gt.get(), nullptr, 1.0f); }, "outside the vocabulary of 11");
}

}  // namespace
}  // namespace q2::cuda::ops::test
