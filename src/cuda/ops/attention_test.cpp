// GPU causal attention (attention.cu) against the CPU reference (error bounds: cuda/ops/test_util.h):
//   - attention output: P is rounded to BF16 for the PV product, so each term p_j v_j carries a
//     relative error <= u, together <= u max|v|; plus the output rounding u |out|;
//   - attention gradients: BF16 rounding of P, dS and the outputs, a relative L2 error of a few
//     u/sqrt(12) per product: asserted <= 1e-2 (about 2.5 u) and cosine >= 0.9999.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

using ::q2::cuda::test::expect_error;

// Relative L2 error and cosine of gpu against cpu.
void expect_direction(const Matrix& gpu, const Matrix& cpu, double max_rel, double min_cos, const std::string& what) {
  double dd = 0, cc = 0, gg = 0, gc = 0;
  for (int64_t i = 0; i < cpu.size(); ++i) {
    const double g = gpu.data[i], c = cpu.data[i];
    dd += (g - c) * (g - c);
    cc += c * c;
    gg += g * g;
    gc += g * c;
  }
  const double rel = std::sqrt(dd / cc), cosine = gc / std::sqrt(gg * cc);
  EXPECT_LE(rel, max_rel) << what << ": relative L2 error";
  EXPECT_GE(cosine, min_cos) << what << ": cosine";
  std::printf("  %-40s rel_err %.3e  cosine %.8f\n", what.c_str(), rel, cosine);
}

struct AttnCase {
  int64_t batch, seq, heads, hd;
  double stddev;  // of q, k, v: larger means sharper softmax
};

// The CPU reference's shape of the case: multi-head, every earlier position.
model::AttentionDims mha(const AttnCase& c) { return {c.batch, c.seq, c.heads, c.heads, c.hd}; }

std::string name(const AttnCase& c) {
  return "attention b" + std::to_string(c.batch) + " s" + std::to_string(c.seq) + " h" + std::to_string(c.heads) +
         " hd" + std::to_string(c.hd);
}

// Natural log-sum-exp of each query row's scaled scores, float64.
std::vector<double> lse_reference(const Matrix& qkv, const AttnCase& c) {
  const int64_t d = c.heads * c.hd;
  const double scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  std::vector<double> out(static_cast<size_t>(c.batch * c.heads * c.seq));
  std::vector<double> s(static_cast<size_t>(c.seq));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.seq; ++i) {
        const float* q = qkv.row(b * c.seq + i) + h * c.hd;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const float* k = qkv.row(b * c.seq + j) + d + h * c.hd;
          double dot = 0;
          for (int64_t e = 0; e < c.hd; ++e) dot += static_cast<double>(q[e]) * k[e];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[j] - mx);
        out[(b * c.heads + h) * c.seq + i] = mx + std::log(sum);
      }
  return out;
}

const std::vector<AttnCase> kAttnCases = {
    {2, 200, 3, 64, 1.0}, {1, 333, 2, 128, 1.0},  {2, 128, 2, 128, 2.0}, {1, 1, 1, 64, 1.0},
    {1, 77, 2, 64, 3.0},  {1, 1024, 1, 128, 1.0}, {3, 65, 1, 128, 1.5},
};

TEST(GpuAttention, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kAttnCases) {
    const int64_t T = c.batch * c.seq, d = c.heads * c.hd;
    const Matrix qkv = random_bf16(T, 3 * d, 30 + c.seq, c.stddev);
    auto g = to_dev_bf16(qkv);
    DeviceBuffer<bf16> out(T * d);
    DeviceBuffer<float> lse(c.batch * c.heads * c.seq);
    poison(out);
    poison(lse);
    attention_forward(g.get(), {c.batch, c.seq, c.heads, c.hd}, out.get(), lse.get());
    Matrix ref(T, d);
    std::vector<float> probs;
    model::cpu::attention_forward(qkv, mha(c), ref, probs);
    double vmax = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t col = 2 * d; col < 3 * d; ++col) vmax = std::max(vmax, std::fabs(double(qkv.at(t, col))));
    // BF16 probabilities in PV (<= u max|v|), output rounding (u |out|), float32 slack.
    expect_close(from_dev(out, T, d), ref, kU * 1.001, kU * vmax * 1.001 + 1e-5 * vmax, name(c) + " out");
    const std::vector<double> lref = lse_reference(qkv, c);
    Matrix lgot = from_dev(lse, 1, static_cast<int64_t>(lref.size()));
    Matrix lexp(1, static_cast<int64_t>(lref.size()));
    for (size_t i = 0; i < lref.size(); ++i) lexp.data[i] = static_cast<float>(lref[i]);
    expect_close(lgot, lexp, 1e-6, 1e-4, name(c) + " lse");
  }
}

TEST(GpuAttention, BackwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kAttnCases) {
    if (c.seq == 1) continue;  // no gradient to speak of (dq = dk = 0)
    const int64_t T = c.batch * c.seq, d = c.heads * c.hd;
    const Matrix qkv = random_bf16(T, 3 * d, 40 + c.seq, c.stddev);
    const Matrix dout = random_bf16(T, d, 50 + c.seq);
    auto g = to_dev_bf16(qkv);
    auto gdo = to_dev_bf16(dout);
    DeviceBuffer<bf16> out(T * d), dqkv(T * 3 * d);
    DeviceBuffer<float> lse(c.batch * c.heads * c.seq);
    const AttentionShape shape{c.batch, c.seq, c.heads, c.hd};
    attention_forward(g.get(), shape, out.get(), lse.get());
    poison(dqkv);
    attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape, dqkv.get());
    const Matrix got = from_dev(dqkv, T, 3 * d);
    poison(dqkv);
    attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape, dqkv.get());
    expect_bits_equal(from_dev(dqkv, T, 3 * d), got, name(c) + " backward run twice (deterministic)");

    Matrix ref_out(T, d), ref(T, 3 * d);
    std::vector<float> probs;
    model::cpu::attention_forward(qkv, mha(c), ref_out, probs);
    model::cpu::attention_backward(dout, qkv, probs, mha(c), ref);
    for (int part = 0; part < 3; ++part) {
      Matrix gp(T, d), rp(T, d);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t col = 0; col < d; ++col) {
          gp.at(t, col) = got.at(t, part * d + col);
          rp.at(t, col) = ref.at(t, part * d + col);
        }
      expect_direction(gp, rp, 1e-2, 0.9999, name(c) + (part == 0 ? " dq" : part == 1 ? " dk" : " dv"));
      for (float v : gp.data) ASSERT_TRUE(std::isfinite(v)) << name(c) << ": unwritten or non-finite gradient";
    }
  }
}

TEST(GpuAttention, RejectsOtherHeadDims) {
  REQUIRE_GPU();
  DeviceBuffer<bf16> qkv(3 * 96 * 4), out(96 * 4);
  DeviceBuffer<float> lse(4);
  expect_error(
      [&] {
        attention_forward(qkv.get(), {1, 4, 1, 96}, out.get(), lse.get());
      },
      "head_dim 96 is not supported");
  expect_error(
      [&] {
        attention_backward(out.get(), qkv.get(), out.get(), lse.get(), {1, 4, 1, 32}, qkv.get());
      },
      "head_dim 32 is not supported");
}

// Timing printout (no assertion): forward and backward at the 100m preset's attention shape.
TEST(GpuAttention, Benchmark) {
  REQUIRE_GPU();
  for (const AttnCase c : {AttnCase{8, 1024, 8, 128, 1.0}, AttnCase{8, 1024, 16, 64, 1.0}}) {
    const int64_t T = c.batch * c.seq, d = c.heads * c.hd;
    auto g = to_dev_bf16(random_bf16(T, 3 * d, 60));
    auto gdo = to_dev_bf16(random_bf16(T, d, 61));
    DeviceBuffer<bf16> out(T * d), dqkv(T * 3 * d);
    DeviceBuffer<float> lse(c.batch * c.heads * c.seq);
    const AttentionShape shape{c.batch, c.seq, c.heads, c.hd};
    cudaEvent_t e0, e1, e2;
    check(cudaEventCreate(&e0), "event");
    check(cudaEventCreate(&e1), "event");
    check(cudaEventCreate(&e2), "event");
    for (int i = 0; i < 3; ++i) {
      attention_forward(g.get(), shape, out.get(), lse.get());
      attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape, dqkv.get());
    }
    constexpr int kReps = 20;
    std::vector<float> fwd_ms, bwd_ms;
    for (int i = 0; i < kReps; ++i) {
      check(cudaEventRecord(e0, 0), "record");
      attention_forward(g.get(), shape, out.get(), lse.get());
      check(cudaEventRecord(e1, 0), "record");
      attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape, dqkv.get());
      check(cudaEventRecord(e2, 0), "record");
      check(cudaEventSynchronize(e2), "sync");
      float f = 0, b = 0;
      check(cudaEventElapsedTime(&f, e0, e1), "elapsed");
      check(cudaEventElapsedTime(&b, e1, e2), "elapsed");
      fwd_ms.push_back(f);
      bwd_ms.push_back(b);
    }
    std::sort(fwd_ms.begin(), fwd_ms.end());
    std::sort(bwd_ms.begin(), bwd_ms.end());
    const double f = fwd_ms[kReps / 2], b = bwd_ms[kReps / 2];
    // Causal FLOPs: forward 2 products of B*H*S*S/2*hd multiply-adds; backward 2.5x forward.
    const double fwd_flop = 4.0 * c.batch * c.heads * c.seq * c.seq * c.hd / 2, bwd_flop = 2.5 * fwd_flop;
    std::printf(
        "attention timing (batch %lld, seq %lld, heads %lld, head_dim %lld): forward %.3f ms %.1f TFLOP/s, "
        "backward %.3f ms %.1f TFLOP/s, forward+backward %.1f TFLOP/s\n",
        static_cast<long long>(c.batch), static_cast<long long>(c.seq), static_cast<long long>(c.heads),
        static_cast<long long>(c.hd), f, fwd_flop / f * 1e-9, b, bwd_flop / b * 1e-9,
        (fwd_flop + bwd_flop) / (f + b) * 1e-9);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaEventDestroy(e2);
  }
}

}  // namespace
}  // namespace q2::cuda::ops::test
