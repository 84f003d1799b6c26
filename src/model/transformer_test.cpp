#include "model/transformer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "quant/philox.h"

namespace q2::model {
namespace {

ModelConfig micro() {
  return {.preset = "micro", .n_layers = 2, .d_model = 32, .n_heads = 2, .d_ff = 48, .vocab = 40, .seq_len = 8};
}

std::vector<uint32_t> tokens(int64_t n, uint64_t seed, uint32_t vocab) {
  std::vector<uint32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = philox::word(seed, philox::kData, i) % vocab;
  return t;
}

// Directional derivatives of the summed loss along random directions u, by Richardson-
// extrapolated central differences, against the analytic gradient: <g, u>.
TEST(Transformer, GradientsMatchFiniteDifferences) {
  const auto backend = make_cpu_backend();
  Transformer model(micro(), linear::scheme_by_name("fp32"), *backend);
  model.init(3);
  // Larger weights than the init so every part of the network contributes visibly.
  for (Param& p : model.params())
    if (p.value.rows > 1) backend->scale(p.value, 10.0f);
  std::vector<Matrix> base, grads;
  for (Param& p : model.params()) base.push_back(backend->download(p.value));
  const int64_t batch = 2, seq = 8;
  const auto in = tokens(batch * seq, 1, 40), tg = tokens(batch * seq, 2, 40);
  model.zero_grads();
  model.forward(in, tg, batch, seq);
  model.backward(0, 1.0f);
  for (Tensor& g : model.grads()) grads.push_back(backend->download(g));
  for (uint64_t dir = 0; dir < 4; ++dir) {
    std::vector<Matrix> u;
    double analytic = 0;
    for (size_t i = 0; i < model.params().size(); ++i) {
      Matrix d(base[i].rows, base[i].cols);
      for (int64_t j = 0; j < d.size(); ++j)
        d.data[j] = static_cast<float>(philox::word(100 + dir, 7, i * 100000 + j) >> 8) * 0x1p-24f - 0.5f;
      for (int64_t j = 0; j < d.size(); ++j) analytic += static_cast<double>(grads[i].data[j]) * d.data[j];
      u.push_back(std::move(d));
    }
    auto loss_at = [&](double eps) {
      for (size_t i = 0; i < base.size(); ++i) {
        Matrix m = base[i];
        for (int64_t j = 0; j < m.size(); ++j) m.data[j] = static_cast<float>(base[i].data[j] + eps * u[i].data[j]);
        backend->upload(m, model.params()[i].value);
      }
      return model.forward(in, tg, batch, seq);
    };
    // Step chosen so the loss moves by about a percent; Richardson removes the O(eps^2) term.
    const double h = 1e-2 / std::max(1e-12, std::fabs(analytic)) * 10.0;
    const double d1 = (loss_at(h) - loss_at(-h)) / (2 * h), d2 = (loss_at(h / 2) - loss_at(-h / 2)) / h;
    const double fd = (4 * d2 - d1) / 3;
    for (size_t i = 0; i < base.size(); ++i) backend->upload(base[i], model.params()[i].value);
    EXPECT_NEAR(fd, analytic, 1e-4 * std::fabs(analytic)) << "direction " << dir;
  }
}

TEST(Transformer, PresetsMatchThePaper) {
  EXPECT_EQ(preset("30m", 32000, 512).non_embedding_params(), 30482560);
  EXPECT_EQ(preset("50m", 32000, 512).non_embedding_params(), 49556736);
  EXPECT_EQ(preset("100m", 32000, 512).non_embedding_params(), 102777856);
  EXPECT_EQ(preset("200m", 32000, 512).non_embedding_params(), 203188480);
  EXPECT_THROW(preset("7b", 32000, 512), Error);
}

TEST(Transformer, Quartet2KeepsPackedActivationsAndRejectsBadTokens) {
  const auto backend = make_cpu_backend();
  ModelConfig c = micro();
  c.d_model = 128;
  c.n_heads = 2;
  c.d_ff = 128;
  c.seq_len = 64;
  Transformer q(c, linear::scheme_by_name("quartet2"), *backend), b(c, linear::scheme_by_name("bf16"), *backend);
  q.init(1);
  b.init(1);
  const auto in = tokens(2 * 64, 1, 40), tg = tokens(2 * 64, 2, 40);
  const double lq = q.forward(in, tg, 2, 64), lb = b.forward(in, tg, 2, 64);
  EXPECT_NEAR(lq / lb, 1.0, 0.05);
  q.backward(1, 1.0f);
  EXPECT_LT(q.saved_activation_bytes() * 3, b.saved_activation_bytes());
  std::vector<uint32_t> bad = in;
  bad[3] = 40;
  EXPECT_THROW(q.forward(bad, tg, 2, 64), Error);
  EXPECT_THROW(q.forward(in, tg, 2, 65), Error);
  // Token counts that are not a multiple of 128 are padded with zero rows, not rejected.
  const auto in16 = tokens(2 * 8, 1, 40), tg16 = tokens(2 * 8, 2, 40);
  EXPECT_GT(q.forward(in16, tg16, 2, 8), 0.0);
  q.backward(2, 1.0f);
}

}  // namespace
}  // namespace q2::model
