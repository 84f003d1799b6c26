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
  double stddev;          // of q, k, v: larger means sharper softmax
  int64_t kv_heads = 0;   // 0: heads (multi-head)
  int64_t window = -1;    // < 0: every earlier position
};

// The CPU reference's shape of the case.
model::AttentionDims dims(const AttnCase& c) {
  return {c.batch, c.seq, c.heads, c.kv_heads > 0 ? c.kv_heads : c.heads, c.hd, c.window};
}
AttentionShape shape(const AttnCase& c) { return {c.batch, c.seq, c.heads, c.hd, c.kv_heads, c.window}; }

std::string name(const AttnCase& c) {
  return "attention b" + std::to_string(c.batch) + " s" + std::to_string(c.seq) + " h" + std::to_string(c.heads) +
         (c.kv_heads > 0 ? " kv" + std::to_string(c.kv_heads) : "") + " hd" + std::to_string(c.hd) +
         (c.window >= 0 ? " w" + std::to_string(c.window) : "");
}

// Natural log-sum-exp of each query row's scaled scores over its keys, float64.
std::vector<double> lse_reference(const Matrix& qkv, const AttnCase& c) {
  const model::AttentionDims a = dims(c);
  const double scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  std::vector<double> out(static_cast<size_t>(c.batch * c.heads * c.seq));
  std::vector<double> s(static_cast<size_t>(c.seq));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.seq; ++i) {
        const float* q = qkv.row(b * c.seq + i) + h * c.hd;
        double mx = -INFINITY;
        for (int64_t j = a.first_key(i); j <= i; ++j) {
          const float* k = qkv.row(b * c.seq + j) + a.q_cols() + h / a.group() * c.hd;
          double dot = 0;
          for (int64_t e = 0; e < c.hd; ++e) dot += static_cast<double>(q[e]) * k[e];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = a.first_key(i); j <= i; ++j) sum += std::exp(s[j] - mx);
        out[(b * c.heads + h) * c.seq + i] = mx + std::log(sum);
      }
  return out;
}

const std::vector<AttnCase> kAttnCases = {
    {2, 200, 3, 64, 1.0}, {1, 333, 2, 128, 1.0},  {2, 128, 2, 128, 2.0}, {1, 1, 1, 64, 1.0},
    {1, 77, 2, 64, 3.0},  {1, 1024, 1, 128, 1.0}, {3, 65, 1, 128, 1.5},
};

// Grouped-query (n_heads / n_kv_heads from 1 to n_heads) and sliding-window attention. The tiles
// are 64 and 128 query rows (forward, dQ), 32 and 64 keys or queries (dQ, dK/dV by head_dim):
// the windows include 0 and 1, ones that divide no tile size, one of exactly a tile, seq - 2
// (the smallest windowed one), seq - 1 and above (the full causal kernels), and one of seq / 2
// (nanochat's "S"); sequences that end mid-tile.
const std::vector<AttnCase> kGroupWindowCases = {
    {2, 200, 4, 64, 1.0, 1},        // multi-query: group = n_heads
    {1, 333, 6, 128, 1.0, 2},       // group 3
    {2, 130, 4, 64, 2.0, 4, 50},    // group 1, window 50
    {1, 300, 4, 64, 1.0, 2, 1},     // window 1
    {1, 257, 2, 128, 1.0, 1, 0},    // window 0: the diagonal only
    {1, 100, 2, 64, 1.0, 2, 100},   // window >= seq: full causal
    {1, 100, 2, 64, 1.0, 1, 99},    // window seq - 1: full causal
    {1, 100, 2, 128, 1.0, 1, 98},   // window seq - 2: the smallest windowed case
    {2, 512, 8, 128, 1.0, 2, 256},  // nanochat-like: window seq / 2, group 4
    {1, 1024, 4, 64, 3.0, 4, 100},  // long, narrow band: most tiles skipped, sharp softmax
    {1, 700, 3, 128, 1.0, 3, 64},   // window of one key tile
    {1, 700, 3, 64, 1.5, 1, 127},   // window of a query tile minus one, group 3
    {3, 65, 2, 128, 1.0, 1, 33},    // batches, group 2, window 33
    {1, 1, 4, 64, 1.0, 2, 0},       // one position
};

void check_forward(const AttnCase& c) {
  const model::AttentionDims a = dims(c);
  const int64_t T = c.batch * c.seq, d = a.q_cols();
  const Matrix qkv = random_bf16(T, a.qkv_cols(), 30 + c.seq, c.stddev);
  auto g = to_dev_bf16(qkv);
  DeviceBuffer<bf16> out(T * d);
  DeviceBuffer<float> lse(c.batch * c.heads * c.seq);
  poison(out);
  poison(lse);
  attention_forward(g.get(), shape(c), out.get(), lse.get());
  const Matrix got = from_dev(out, T, d), lgot = from_dev(lse, 1, c.batch * c.heads * c.seq);
  Matrix ref(T, d);
  std::vector<float> probs;
  model::cpu::attention_forward(qkv, a, ref, probs);
  double vmax = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t col = a.q_cols() + a.kv_cols(); col < a.qkv_cols(); ++col)
      vmax = std::max(vmax, std::fabs(double(qkv.at(t, col))));
  // BF16 probabilities in PV (<= u max|v|), output rounding (u |out|), float32 slack.
  expect_close(got, ref, kU * 1.001, kU * vmax * 1.001 + 1e-5 * vmax, name(c) + " out");
  const std::vector<double> lref = lse_reference(qkv, c);
  Matrix lexp(1, static_cast<int64_t>(lref.size()));
  for (size_t i = 0; i < lref.size(); ++i) lexp.data[i] = static_cast<float>(lref[i]);
  expect_close(lgot, lexp, 1e-6, 1e-4, name(c) + " lse");
  // Deterministic: a second run gives the same bits.
  poison(out);
  poison(lse);
  attention_forward(g.get(), shape(c), out.get(), lse.get());
  expect_bits_equal(from_dev(out, T, d), got, name(c) + " forward run twice (deterministic)");
  expect_bits_equal(from_dev(lse, 1, c.batch * c.heads * c.seq), lgot, name(c) + " lse run twice (deterministic)");
}

void check_backward(const AttnCase& c) {
  const model::AttentionDims a = dims(c);
  const int64_t T = c.batch * c.seq, d = a.q_cols(), cols = a.qkv_cols();
  const Matrix qkv = random_bf16(T, cols, 40 + c.seq, c.stddev);
  const Matrix dout = random_bf16(T, d, 50 + c.seq);
  auto g = to_dev_bf16(qkv);
  auto gdo = to_dev_bf16(dout);
  DeviceBuffer<bf16> out(T * d), dqkv(T * cols);
  DeviceBuffer<float> lse(c.batch * c.heads * c.seq);
  attention_forward(g.get(), shape(c), out.get(), lse.get());
  poison(dqkv);
  attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape(c), dqkv.get());
  const Matrix got = from_dev(dqkv, T, cols);
  poison(dqkv);
  attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape(c), dqkv.get());
  expect_bits_equal(from_dev(dqkv, T, cols), got, name(c) + " backward run twice (deterministic)");

  Matrix ref_out(T, d), ref(T, cols);
  std::vector<float> probs;
  model::cpu::attention_forward(qkv, a, ref_out, probs);
  model::cpu::attention_backward(dout, qkv, probs, a, ref);
  const int64_t col0[3] = {0, a.q_cols(), a.q_cols() + a.kv_cols()}, width[3] = {a.q_cols(), a.kv_cols(), a.kv_cols()};
  for (int part = 0; part < 3; ++part) {
    Matrix gp(T, width[part]), rp(T, width[part]);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t col = 0; col < width[part]; ++col) {
        gp.at(t, col) = got.at(t, col0[part] + col);
        rp.at(t, col) = ref.at(t, col0[part] + col);
      }
    for (float v : gp.data) ASSERT_TRUE(std::isfinite(v)) << name(c) << ": unwritten or non-finite gradient";
    // Window 0: each query sees only its own key, P = 1, so dq = dk = 0 on the CPU (dv = dO). The
    // GPU's dS = P (dP - D) keeps rounding noise: D = rowsum(dO * O) with O rounded to BF16, dP - D
    // about u / sqrt(3) sqrt(head_dim) |dO| |v| (u = 2^-8), times scale |k|: about 0.0023 |dO|.
    if (c.window == 0 && part < 2) {
      double gg = 0, oo = 0;
      for (float v : gp.data) gg += double(v) * v;
      for (float v : dout.data) oo += double(v) * v;
      const double rms = std::sqrt(gg / double(gp.size())), rms_do = std::sqrt(oo / double(dout.size()));
      EXPECT_LE(rms, 1e-2 * rms_do) << name(c) << (part == 0 ? " dq" : " dk") << ": not about zero";
      continue;
    }
    expect_direction(gp, rp, 1e-2, 0.9999, name(c) + (part == 0 ? " dq" : part == 1 ? " dk" : " dv"));
  }
}

TEST(GpuAttention, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kAttnCases) check_forward(c);
}

TEST(GpuAttention, BackwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kAttnCases)
    if (c.seq > 1) check_backward(c);  // seq 1: no gradient to speak of (dq = dk = 0)
}

TEST(GpuAttention, GroupedQueryAndWindowForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kGroupWindowCases) check_forward(c);
}

TEST(GpuAttention, GroupedQueryAndWindowBackwardMatchesCpu) {
  REQUIRE_GPU();
  for (const AttnCase& c : kGroupWindowCases)
    if (c.seq > 1) check_backward(c);
}

// Grouped-query attention is multi-head attention over K and V copied to every query head of the
// group: the forward, the log-sum-exp and dQ are bit for bit those of the multi-head kernels run on
// the copies (the same products in the same order), and dK, dV the group's sums of the multi-head
// gradients (up to their BF16 rounding). With a window too (the windowed kernels both ways).
TEST(GpuAttention, GroupedQueryEqualsMultiHeadOnCopiedKeys) {
  REQUIRE_GPU();
  for (const AttnCase& c : {AttnCase{2, 200, 4, 64, 1.0, 2}, AttnCase{1, 333, 6, 128, 1.0, 2},
                            AttnCase{1, 300, 4, 128, 1.0, 1, 70}, AttnCase{1, 257, 8, 64, 2.0, 8, 100}}) {
    const model::AttentionDims a = dims(c);
    AttnCase m = c;
    m.kv_heads = 0;
    const int64_t T = c.batch * c.seq, d = a.q_cols(), cols = a.qkv_cols();
    const Matrix qkv = random_bf16(T, cols, 70 + c.seq, c.stddev), dout = random_bf16(T, d, 80 + c.seq);
    Matrix wide(T, 3 * d);  // q | k copied per query head | v copied per query head
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t e = 0; e < c.hd; ++e) {
          const int64_t kv = h / a.group() * c.hd + e;
          wide.at(t, h * c.hd + e) = qkv.at(t, h * c.hd + e);
          wide.at(t, d + h * c.hd + e) = qkv.at(t, d + kv);
          wide.at(t, 2 * d + h * c.hd + e) = qkv.at(t, d + a.kv_cols() + kv);
        }
    auto g = to_dev_bf16(qkv), gw = to_dev_bf16(wide), gdo = to_dev_bf16(dout);
    DeviceBuffer<bf16> out(T * d), outw(T * d), dqkv(T * cols), dwide(T * 3 * d);
    DeviceBuffer<float> lse(c.batch * c.heads * c.seq), lsew(c.batch * c.heads * c.seq);
    attention_forward(g.get(), shape(c), out.get(), lse.get());
    attention_forward(gw.get(), shape(m), outw.get(), lsew.get());
    expect_bits_equal(from_dev(out, T, d), from_dev(outw, T, d), name(c) + " out vs multi-head on copies");
    expect_bits_equal(from_dev(lse, 1, c.batch * c.heads * c.seq), from_dev(lsew, 1, c.batch * c.heads * c.seq),
                      name(c) + " lse vs multi-head on copies");
    attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape(c), dqkv.get());
    attention_backward(gdo.get(), gw.get(), outw.get(), lsew.get(), shape(m), dwide.get());
    const Matrix got = from_dev(dqkv, T, cols), wgot = from_dev(dwide, T, 3 * d);
    Matrix dq(T, d), dqw(T, d), dkv(T, 2 * a.kv_cols()), dkv_sum(T, 2 * a.kv_cols());
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t col = 0; col < d; ++col) dq.at(t, col) = got.at(t, col), dqw.at(t, col) = wgot.at(t, col);
      for (int64_t col = 0; col < 2 * a.kv_cols(); ++col) dkv.at(t, col) = got.at(t, d + col);
      for (int64_t part = 0; part < 2; ++part)  // dK, then dV: the group's sum, float32
        for (int64_t h = 0; h < c.heads; ++h)
          for (int64_t e = 0; e < c.hd; ++e)
            dkv_sum.at(t, part * a.kv_cols() + h / a.group() * c.hd + e) += wgot.at(t, (1 + part) * d + h * c.hd + e);
    }
    expect_bits_equal(dq, dqw, name(c) + " dq vs multi-head on copies");
    expect_direction(dkv, dkv_sum, 1e-2, 0.9999, name(c) + " dk|dv vs summed multi-head");
  }
}

// A window of seq - 1 or more is the full causal attention: the same kernels, the same bits.
TEST(GpuAttention, WideWindowIsFullCausal) {
  REQUIRE_GPU();
  const AttnCase full{2, 150, 2, 64, 1.0};
  for (int64_t w : {int64_t{149}, int64_t{150}, int64_t{1000}}) {
    AttnCase c = full;
    c.window = w;
    const int64_t T = c.batch * c.seq, d = c.heads * c.hd;
    auto g = to_dev_bf16(random_bf16(T, 3 * d, 90, 1.0));
    auto gdo = to_dev_bf16(random_bf16(T, d, 91));
    DeviceBuffer<bf16> out(T * d), out_full(T * d), dqkv(T * 3 * d), dqkv_full(T * 3 * d);
    DeviceBuffer<float> lse(c.batch * c.heads * c.seq), lse_full(c.batch * c.heads * c.seq);
    attention_forward(g.get(), shape(c), out.get(), lse.get());
    attention_forward(g.get(), shape(full), out_full.get(), lse_full.get());
    attention_backward(gdo.get(), g.get(), out.get(), lse.get(), shape(c), dqkv.get());
    attention_backward(gdo.get(), g.get(), out_full.get(), lse_full.get(), shape(full), dqkv_full.get());
    expect_bits_equal(from_dev(out, T, d), from_dev(out_full, T, d), name(c) + " out vs full causal");
    expect_bits_equal(from_dev(dqkv, T, 3 * d), from_dev(dqkv_full, T, 3 * d), name(c) + " dqkv vs full causal");
  }
}

TEST(GpuAttention, RejectsKvHeadsThatDoNotDivideHeads) {
  REQUIRE_GPU();
  DeviceBuffer<bf16> qkv(4 * (3 + 2 * 2) * 64), out(4 * 3 * 64);
  DeviceBuffer<float> lse(3 * 4);
  expect_error([&] { attention_forward(qkv.get(), {1, 4, 3, 64, 2}, out.get(), lse.get()); },
               "kv_heads 2 must divide heads 3");
  expect_error([&] { attention_backward(out.get(), qkv.get(), out.get(), lse.get(), {1, 4, 3, 64, 2}, qkv.get()); },
               "kv_heads 2 must divide heads 3");
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
