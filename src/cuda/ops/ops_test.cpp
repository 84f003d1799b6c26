// GPU model ops against the CPU reference (model/cpu_ops.h, run in float32 on the same
// BF16-exact inputs). Error bounds, with u = 2^-8 the unit roundoff of BF16 (8 significant
// bits, round to nearest even: |bf16(x) - x| <= 2^-8 |x|):
//   - an op computing the CPU's float32 formula and rounding once to BF16: |gpu - cpu| <= u |cpu|
//     (a little more where the GPU's expf / sin / reduction order differ in the last float bit);
//   - attention output: P is rounded to BF16 for the PV product, so each term p_j v_j carries a
//     relative error <= u, together <= u max|v|; plus the output rounding u |out|;
//   - attention gradients: BF16 rounding of P, dS and the outputs, a relative L2 error of a few
//     u/sqrt(12) per product: asserted <= 1e-2 (about 2.5 u) and cosine >= 0.9999;
//   - bit-exact where the GPU performs the CPU's float operations in the CPU's order
//     (embedding, rmsnorm dw, AdamW, scaling, conversion).
// Every test skips when no CUDA device is present (the binary is not part of ctest).
#include "cuda/ops/ops.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16.h"
#include "model/backend.h"
#include "model/cpu_ops.h"
#include "quant/distributions.h"

namespace q2::cuda::ops {
namespace {

using ::q2::cuda::test::expect_error;

constexpr double kU = 1.0 / 256;  // BF16 unit roundoff

// Gaussian values rounded to BF16 (exact in float32 and in BF16).
Matrix random_bf16(int64_t rows, int64_t cols, uint64_t seed, double stddev = 1.0) {
  Matrix m = quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed, stddev);
  for (float& v : m.data) v = q2::bf16::round(v);
  return m;
}

std::vector<uint16_t> bits_of(const Matrix& m) {
  std::vector<uint16_t> b(m.data.size());
  for (size_t i = 0; i < b.size(); ++i) b[i] = q2::bf16::encode(m.data[i]);
  return b;
}

DeviceBuffer<bf16> to_dev_bf16(const Matrix& m) {
  DeviceBuffer<bf16> d(m.size());
  const std::vector<uint16_t> b = bits_of(m);
  check(cudaMemcpy(d.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice), "upload bf16");
  return d;
}

template <class T>
DeviceBuffer<T> to_dev(const std::vector<T>& v) {
  DeviceBuffer<T> d(static_cast<int64_t>(v.size()));
  check(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

DeviceBuffer<float> to_dev(const Matrix& m) { return to_dev(m.data); }

Matrix from_dev(const DeviceBuffer<bf16>& d, int64_t rows, int64_t cols) {
  std::vector<uint16_t> b(static_cast<size_t>(rows * cols));
  check(cudaMemcpy(b.data(), d.get(), b.size() * 2, cudaMemcpyDeviceToHost), "download bf16");
  Matrix m(rows, cols);
  for (size_t i = 0; i < b.size(); ++i) m.data[i] = q2::bf16::decode(b[i]);
  return m;
}

Matrix from_dev(const DeviceBuffer<float>& d, int64_t rows, int64_t cols) {
  Matrix m(rows, cols);
  check(cudaMemcpy(m.data.data(), d.get(), m.data.size() * 4, cudaMemcpyDeviceToHost), "download f32");
  return m;
}

// All-ones bytes: NaN in BF16 and float32, so an element the op failed to write shows up.
template <class T>
void poison(DeviceBuffer<T>& d) {
  check(cudaMemset(d.get(), 0xFF, d.bytes()), "poison");
}

double max_abs(const Matrix& m) {
  double r = 0;
  for (float v : m.data) r = std::max(r, std::fabs(static_cast<double>(v)));
  return r;
}

// |gpu - cpu| <= rel |cpu| + abs for every element (NaN fails); reports the first violation.
void expect_close(const Matrix& gpu, const Matrix& cpu, double rel, double abs, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < cpu.size(); ++i) {
    const double g = gpu.data[i], c = cpu.data[i];
    if (!(std::fabs(g - c) <= rel * std::fabs(c) + abs) && bad++ == 0)
      ADD_FAILURE() << what << ": element " << i << " (row " << i / cpu.cols << ", col " << i % cpu.cols << "): gpu "
                    << g << " vs cpu " << c << " (tolerance " << rel * std::fabs(c) + abs << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

void expect_bits_equal(const Matrix& gpu, const Matrix& cpu, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < cpu.size(); ++i)
    if (float_bits(gpu.data[i]) != float_bits(cpu.data[i]) && bad++ == 0)
      ADD_FAILURE() << what << ": first difference at element " << i << ": gpu " << gpu.data[i] << " vs cpu "
                    << cpu.data[i];
  EXPECT_EQ(bad, 0) << what << ": elements differ";
}

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

std::vector<uint32_t> random_ids(int64_t n, uint32_t vocab, uint64_t seed) {
  const Matrix u = quant::random_matrix(1, n, quant::Dist::kGaussian, seed);
  std::vector<uint32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[i] = static_cast<uint32_t>(static_cast<uint64_t>(std::fabs(u.data[i]) * 1e6) % vocab);
  return ids;
}

// ---- embedding ----

TEST(GpuEmbedding, ForwardGathersAndRoundsRows) {
  REQUIRE_GPU();
  const int64_t vocab = 1000, d = 200, T = 3 * 128 + 7;
  const Matrix table = quant::random_matrix(vocab, d, quant::Dist::kGaussian, 1);  // float32, not BF16-exact
  const std::vector<uint32_t> ids = random_ids(T, vocab, 2);
  auto dt = to_dev(table);
  auto di = to_dev(ids);
  DeviceBuffer<bf16> out(T * d);
  poison(out);
  IdCheck ids_ok;
  embedding_forward(dt.get(), vocab, d, di.get(), T, out.get(), &ids_ok);
  ids_ok.throw_if_invalid("embedding", vocab);
  Matrix ref(T, d);
  model::cpu::embedding_forward(table, ids, ref);
  for (float& v : ref.data) v = q2::bf16::round(v);
  expect_bits_equal(from_dev(out, T, d), ref, "embedding forward");
}

TEST(GpuEmbedding, ReportsOutOfRangeIds) {
  REQUIRE_GPU();
  const int64_t vocab = 50, d = 16, T = 9;
  const Matrix table = random_bf16(vocab, d, 3);
  std::vector<uint32_t> ids = random_ids(T, vocab, 4);
  ids[5] = 50;
  auto dt = to_dev(table);
  auto di = to_dev(ids);
  DeviceBuffer<bf16> out(T * d);
  IdCheck check_ids;
  embedding_forward(dt.get(), vocab, d, di.get(), T, out.get(), &check_ids);
  expect_error([&] { check_ids.throw_if_invalid("embedding_forward", vocab); }, "token id 50 (row 5) is outside");
  const Matrix o = from_dev(out, T, d);
  EXPECT_TRUE(std::isnan(o.at(5, 0)));
  EXPECT_FALSE(std::isnan(o.at(4, 0)));
  check_ids.throw_if_invalid("cleared", vocab);  // the check resets after reporting

  DeviceBuffer<bf16> dout = to_dev_bf16(random_bf16(T, d, 5));
  DeviceBuffer<float> dtable(vocab * d);
  check(cudaMemset(dtable.get(), 0, dtable.bytes()), "memset");
  embedding_backward(dout.get(), di.get(), T, d, dtable.get(), vocab, &check_ids);
  expect_error([&] { check_ids.throw_if_invalid("embedding_backward", vocab); }, "outside the vocabulary of 50");
}

TEST(GpuEmbedding, BackwardEqualsCpuBitForBit) {
  REQUIRE_GPU();
  for (const int64_t d : {64, 1024, 37}) {
    const int64_t vocab = 300, T = 3 * 128 + 7 + 512;
    std::vector<uint32_t> ids = random_ids(T, 17, 6);  // many repeats
    for (int64_t t = 0; t < T; t += 2) ids[t] = 250;   // one run longer than the load batch
    ids[T - 1] = vocab - 1;
    const Matrix dout = random_bf16(T, d, 7);
    Matrix dtable = quant::random_matrix(vocab, d, quant::Dist::kGaussian, 8);
    auto dd = to_dev_bf16(dout);
    auto di = to_dev(ids);
    auto dt = to_dev(dtable);
    embedding_backward(dd.get(), di.get(), T, d, dt.get(), vocab);
    model::cpu::embedding_backward(dout, ids, dtable);
    expect_bits_equal(from_dev(dt, vocab, d), dtable, "embedding backward d=" + std::to_string(d));
  }
}

// ---- RMSNorm ----

TEST(GpuRmsNorm, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const int64_t d : {768, 100}) {  // 16-byte path and scalar path
    const int64_t T = 3 * 128 + 7;
    const Matrix x = random_bf16(T, d, 10, 2.0);
    const Matrix w = quant::random_matrix(1, d, quant::Dist::kGaussian, 11);
    auto dx = to_dev_bf16(x);
    auto dw = to_dev(w);
    DeviceBuffer<bf16> y(T * d);
    DeviceBuffer<float> rstd(T);
    poison(y);
    poison(rstd);
    rmsnorm_forward(dx.get(), dw.get(), T, d, 1e-5, y.get(), rstd.get());
    Matrix ry(T, d);
    std::vector<float> rr;
    model::cpu::rmsnorm_forward(x, w.data.data(), 1e-5, ry, rr);
    Matrix rstd_ref(1, T);
    rstd_ref.data = rr;
    // rstd: the same float64 formula up to the summation order.
    expect_close(from_dev(rstd, 1, T), rstd_ref, 2.0 / (1 << 23), 0, "rmsnorm rstd d=" + std::to_string(d));
    expect_close(from_dev(y, T, d), ry, kU * 1.001, 0, "rmsnorm y d=" + std::to_string(d));
  }
}

TEST(GpuRmsNorm, BackwardMatchesCpuAndDwIsBitExact) {
  REQUIRE_GPU();
  for (const int64_t d : {1024, 100}) {
    const int64_t T = 3 * 128 + 7;
    const Matrix x = random_bf16(T, d, 12, 2.0), dy = random_bf16(T, d, 13);
    const Matrix w = quant::random_matrix(1, d, quant::Dist::kGaussian, 14);
    Matrix dx = random_bf16(T, d, 15);  // accumulated into
    Matrix dw = quant::random_matrix(1, d, quant::Dist::kGaussian, 16);
    Matrix y(T, d);
    std::vector<float> rstd;
    model::cpu::rmsnorm_forward(x, w.data.data(), 1e-5, y, rstd);
    auto gx = to_dev_bf16(x);
    auto gdy = to_dev_bf16(dy);
    auto gw = to_dev(w);
    auto grstd = to_dev(rstd);
    auto gdx = to_dev_bf16(dx);
    auto gdw = to_dev(dw);
    rmsnorm_backward(gdy.get(), gx.get(), gw.get(), grstd.get(), T, d, gdx.get(), gdw.get());
    model::cpu::rmsnorm_backward(dy, x, w.data.data(), rstd, dx, dw.data.data());
    expect_close(from_dev(gdx, T, d), dx, kU * 1.001, 1e-6 * max_abs(dx), "rmsnorm dx d=" + std::to_string(d));
    expect_bits_equal(from_dev(gdw, 1, d), dw, "rmsnorm dw d=" + std::to_string(d));
  }
}

// ---- RoPE ----

TEST(GpuRope, MatchesCpuAndLeavesOtherColumns) {
  REQUIRE_GPU();
  struct Case {
    int64_t heads, hd, seq, col0;
    int direction;
  };
  for (const Case c : {Case{4, 64, 100, 0, 1}, Case{2, 128, 128, 256, -1}, Case{3, 6, 7, 18, 1}}) {
    const int64_t T = 3 * 128 + 7, d = c.heads * c.hd, cols = 3 * d;
    const Matrix x = random_bf16(T, cols, 20, 3.0);
    Matrix ref = x;
    // q and k in one call when col0 == 0 (2 * heads heads), else only the heads at col0.
    const int64_t n = c.col0 == 0 ? 2 * c.heads : c.heads;
    model::cpu::rope(ref, c.col0, n, c.hd, c.seq, 10000.0, c.direction);
    auto g = to_dev_bf16(x);
    rope(g.get(), T, cols, c.col0, n, c.hd, c.seq, 10000.0, c.direction);
    const Matrix got = from_dev(g, T, cols);
    const std::string what = "rope hd=" + std::to_string(c.hd);
    // cos/sin may differ from glibc in the last float bit.
    expect_close(got, ref, kU * 1.001, 1e-6 * max_abs(ref), what);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t col = 0; col < cols; ++col)
        if (col < c.col0 || col >= c.col0 + n * c.hd) {
          ASSERT_EQ(got.at(t, col), x.at(t, col)) << what;
        }
  }
}

// ---- attention ----

struct AttnCase {
  int64_t batch, seq, heads, hd;
  double stddev;  // of q, k, v: larger means sharper softmax
};

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
    model::cpu::attention_forward(qkv, c.batch, c.seq, c.heads, ref, probs);
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
    model::cpu::attention_forward(qkv, c.batch, c.seq, c.heads, ref_out, probs);
    model::cpu::attention_backward(dout, qkv, probs, c.batch, c.seq, c.heads, ref);
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

// ---- SwiGLU ----

TEST(GpuSwiglu, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  for (const int64_t h : {200, 37}) {
    const int64_t T = 3 * 128 + 7;
    const Matrix h12 = random_bf16(T, 2 * h, 70, 2.0), dg = random_bf16(T, h, 71);
    auto gh = to_dev_bf16(h12);
    auto gdg = to_dev_bf16(dg);
    DeviceBuffer<bf16> g(T * h), dh(T * 2 * h);
    poison(g);
    poison(dh);
    swiglu_forward(gh.get(), T, h, g.get());
    swiglu_backward(gdg.get(), gh.get(), T, h, dh.get());
    Matrix rg(T, h), rdh(T, 2 * h);
    model::cpu::swiglu_forward(h12, rg);
    model::cpu::swiglu_backward(dg, h12, rdh);
    // expf may differ from glibc's in the last bit; the backward's s + silu (1 - s) can cancel.
    expect_close(from_dev(g, T, h), rg, kU * 1.001, 1e-6 * max_abs(rg), "swiglu g h=" + std::to_string(h));
    expect_close(from_dev(dh, T, 2 * h), rdh, kU * 1.001, 1e-6 * max_abs(rdh), "swiglu dh12 h=" + std::to_string(h));
  }
}

// ---- elementwise ----

TEST(GpuElementwise, AddScaleConvert) {
  REQUIRE_GPU();
  const int64_t n = 1000003;  // odd: vector body and scalar tail
  const Matrix a = random_bf16(1, n, 80), b = random_bf16(1, n, 81, 0.5);
  auto ga = to_dev_bf16(a);
  auto gb = to_dev_bf16(b);
  add_inplace(ga.get(), gb.get(), n);
  const Matrix sum = from_dev(ga, 1, n);
  for (int64_t i = 0; i < n; ++i) {
    const double exact = static_cast<double>(a.data[i]) + b.data[i];
    // One rounding of the exact sum; where the float sum is exact that is bf16::round of it.
    ASSERT_LE(std::fabs(sum.data[i] - exact), kU * std::fabs(exact)) << "add at " << i;
    if (static_cast<double>(a.data[i] + b.data[i]) == exact) {
      ASSERT_EQ(sum.data[i], q2::bf16::round(a.data[i] + b.data[i])) << "add at " << i;
    }
  }

  const Matrix x = quant::random_matrix(1, n, quant::Dist::kGaussian, 82);
  auto gx = to_dev(x);
  scale(gx.get(), n, 0.37f);
  Matrix xs = x;
  for (float& v : xs.data) v *= 0.37f;
  expect_bits_equal(from_dev(gx, 1, n), xs, "scale f32");

  auto gab = to_dev_bf16(a);
  scale(gab.get(), n, -1.7f);
  Matrix as = a;
  for (float& v : as.data) v = q2::bf16::round(v * -1.7f);
  expect_bits_equal(from_dev(gab, 1, n), as, "scale bf16");

  // float32 -> BF16 on random values plus exact ties, subnormals and the largest finite values.
  Matrix f = quant::random_matrix(1, n, quant::Dist::kGaussian, 83, 1e3);
  const uint32_t specials[] = {0x3F808000u, 0x3F818000u, 0x00008000u, 0x00018000u, 0x80000001u,
                               0x7F7FFFFFu, 0xFF7F0000u, 0x00000000u, 0x80000000u, 0x3F7FFFFFu};
  for (size_t i = 0; i < std::size(specials); ++i) f.data[i] = bits_float(specials[i]);
  auto gf = to_dev(f);
  DeviceBuffer<bf16> gfb(n);
  poison(gfb);
  convert(gf.get(), gfb.get(), n);
  Matrix fr = f;
  for (float& v : fr.data) v = q2::bf16::round(v);
  const Matrix fb = from_dev(gfb, 1, n);
  expect_bits_equal(fb, fr, "convert f32->bf16");
  DeviceBuffer<float> back(n);
  poison(back);
  convert(gfb.get(), back.get(), n);
  expect_bits_equal(from_dev(back, 1, n), fr, "convert bf16->f32");
}

TEST(GpuElementwise, SumSquaresIsDeterministicFloat64) {
  REQUIRE_GPU();
  for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{1000003}, int64_t{20000000}}) {
    const Matrix x = quant::random_matrix(1, n, quant::Dist::kStudent3, 90, 3.0);
    auto gx = to_dev(x);
    const double got = sum_squares(gx.get(), n), again = sum_squares(gx.get(), n);
    double ref = 0;
    for (float v : x.data) ref += static_cast<double>(v) * v;
    EXPECT_EQ(got, again) << "n=" << n;
    EXPECT_NEAR(got, ref, 1e-12 * ref) << "n=" << n;
  }
  EXPECT_EQ(sum_squares(nullptr, 0), 0.0);
}

// ---- cross-entropy ----

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

// ---- AdamW ----

TEST(GpuAdamW, BitIdenticalToCpuBackend) {
  REQUIRE_GPU();
  auto cpu = model::make_cpu_backend();
  const int64_t rows = 317, cols = 331;
  for (const bool decay : {true, false}) {
    Matrix w = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 120, 0.02);
    Matrix g = quant::random_matrix(rows, cols, quant::Dist::kStudent3, 121, 1e-3);
    Matrix m = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 122, 1e-3);
    Matrix v = quant::random_matrix(rows, cols, quant::Dist::kGaussian, 123, 1e-3);
    for (float& x : v.data) x = x * x;
    const model::AdamWHyper h{3e-4, 0.9, 0.95, 1e-8, 0.1, 7};
    auto gw = to_dev(w), gg = to_dev(g), gm = to_dev(m), gv = to_dev(v);
    adamw(gw.get(), gg.get(), gm.get(), gv.get(), rows * cols, h, decay);

    model::Tensor tw = cpu->alloc(rows, cols, model::Role::kParam), tg = cpu->alloc(rows, cols, model::Role::kParam),
                  tm = cpu->alloc(rows, cols, model::Role::kParam), tv = cpu->alloc(rows, cols, model::Role::kParam);
    cpu->upload(w, tw);
    cpu->upload(g, tg);
    cpu->upload(m, tm);
    cpu->upload(v, tv);
    cpu->adamw(tw, tg, tm, tv, h, decay);
    const std::string what = decay ? "adamw (decay)" : "adamw";
    expect_bits_equal(from_dev(gw, rows, cols), cpu->download(tw), what + " w");
    expect_bits_equal(from_dev(gm, rows, cols), cpu->download(tm), what + " m");
    expect_bits_equal(from_dev(gv, rows, cols), cpu->download(tv), what + " v");
    const double ssq = cpu->sum_squares(tw);  // sequential float64 sum: equal up to the order
    EXPECT_NEAR(sum_squares(gw.get(), rows * cols), ssq, 1e-12 * ssq) << "sum_squares after " << what;
  }
}

}  // namespace
}  // namespace q2::cuda::ops
