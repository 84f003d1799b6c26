#include "model/transformer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>

#include "common/error.h"
#include "common/error_test_util.h"
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

// Per parameter tensor, the directional derivative of the summed loss along a random direction
// u on that tensor alone, by Richardson-extrapolated central differences, against the analytic
// gradient <g, u>, within `tol` of the size of its terms, sum |g_i u_i| (so a direction whose
// terms happen to cancel does not demand more than float32 can give, and a small tensor such as
// the lambdas is judged on its own). `vectors`: also move the 1-row parameters (norm gains,
// lambdas) off their init, so every part contributes.
void expect_gradients_match_finite_differences(const ModelConfig& c, bool vectors = false, double tol = 1e-4) {
  const auto backend = make_cpu_backend();
  Transformer model(c, linear::scheme_by_name("fp32"), *backend);
  model.init(3);
  // Larger weights than the init so every part of the network contributes visibly.
  for (size_t i = 0; i < model.params().size(); ++i) {
    Param& p = model.params()[i];
    if (p.value.rows > 1) {
      backend->scale(p.value, 10.0f);
    } else if (vectors) {
      Matrix m = backend->download(p.value);
      for (int64_t j = 0; j < m.size(); ++j)
        m.data[j] = 0.5f + static_cast<float>(philox::word(50, 9, i * 1000 + j) >> 8) * 0x1p-24f;
      backend->upload(m, p.value);
    }
  }
  const int64_t batch = 2, seq = 8;
  const uint32_t vocab = static_cast<uint32_t>(c.vocab);
  const auto in = tokens(batch * seq, 1, vocab), tg = tokens(batch * seq, 2, vocab);
  model.zero_grads();
  model.forward(in, tg, batch, seq);
  model.backward(0, 1.0f);
  for (size_t i = 0; i < model.params().size(); ++i) {
    const Matrix base = backend->download(model.params()[i].value), grad = backend->download(model.grads()[i]);
    Matrix u(base.rows, base.cols);
    double analytic = 0, mag = 0;
    for (int64_t j = 0; j < u.size(); ++j) {
      u.data[j] = static_cast<float>(philox::word(100 + i, 7, j) >> 8) * 0x1p-24f - 0.5f;
      analytic += static_cast<double>(grad.data[j]) * u.data[j];
      mag += std::fabs(static_cast<double>(grad.data[j]) * u.data[j]);
    }
    auto loss_at = [&](double eps) {
      Matrix m = base;
      for (int64_t j = 0; j < m.size(); ++j) m.data[j] = static_cast<float>(base.data[j] + eps * u.data[j]);
      backend->upload(m, model.params()[i].value);
      return model.forward(in, tg, batch, seq);
    };
    ASSERT_GT(mag, 0) << model.params()[i].name << " has no gradient";
    // A step that moves the loss by at most ~0.1 and the weights (of size ~1, or ~10 scaled) by at
    // most 0.025; Richardson removes the O(eps^2) term.
    const double h = std::min(0.1 / mag, 0.05);
    const double d1 = (loss_at(h) - loss_at(-h)) / (2 * h), d2 = (loss_at(h / 2) - loss_at(-h / 2)) / h;
    const double fd = (4 * d2 - d1) / 3;
    backend->upload(base, model.params()[i].value);
    // A 1-row parameter's gradient is a float32 sum over every token and feature whose terms
    // largely cancel (the lambdas' <dy, x>): its error is relative to the terms, not to the sum.
    EXPECT_NEAR(fd, analytic, (base.rows == 1 ? 10 : 1) * tol * mag) << model.params()[i].name;
  }
}

TEST(Transformer, GradientsMatchFiniteDifferences) { expect_gradients_match_finite_differences(micro()); }

// nanochat's architecture on a micro model: QK norm after RoPE, the ReLU^2 MLP, norms without
// gains (the embedding's too), the resid / x0 lambdas and the logit softcap; and grouped-query
// attention (4 query heads on 2), a sliding window on layer 0 (model.seq_len / 2 = 4 positions
// back, "SL"). The lambdas are moved off 1 and 0 so that both paths carry gradient.
ModelConfig nanochat_micro() {
  ModelConfig c = nanochat_architecture(micro());
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.window_pattern = "SL";
  c.init = "llama";  // nanochat's zero output projections would leave the blocks' insides without gradient
  return c;
}

TEST(Transformer, NanochatArchitectureGradientsMatchFiniteDifferences) {
  expect_gradients_match_finite_differences(nanochat_micro(), true);
}

// micro() with the given keys.
ModelConfig micro_with(const ModelOverrides& o) {
  nlohmann::json j = to_json(micro());
  for_each_model_key(o, [&](const char* key, const auto& v) {
    if (v) j[key] = *v;
  });
  return model_config_from_json(j);
}

// Each option alone, so that a wrong gradient points at its option.
TEST(Transformer, EachNanochatOptionAloneMatchesFiniteDifferences) {
  const std::vector<std::pair<std::string, ModelOverrides>> options = {
      {"n_kv_heads", {.n_heads = 4, .n_kv_heads = 1}},
      {"qk_norm", {.qk_norm = true}},
      {"window_pattern", {.window_pattern = "S"}},
      {"mlp", {.d_ff = 64, .mlp = "relu2"}},
      {"norm_weights", {.norm_weights = false}},
      {"embed_norm", {.embed_norm = true}},
      {"resid_x0_lambdas", {.resid_x0_lambdas = true}},
      {"logit_softcap", {.logit_softcap = 5}},
      {"tie_embeddings", {.tie_embeddings = true}},
  };
  for (const auto& [name, o] : options) {
    SCOPED_TRACE("model." + name);
    expect_gradients_match_finite_differences(micro_with(o), true);
  }
}

TEST(Transformer, TiedHeadIsTheEmbedding) {
  const auto backend = make_cpu_backend();
  ModelConfig c = micro();
  c.tie_embeddings = true;
  Transformer model(c, linear::scheme_by_name("fp32"), *backend);
  EXPECT_EQ(model.params().back().name, "norm.weight");  // no output.weight
  int64_t n = 0;
  for (const Param& p : model.params()) n += p.value.size();
  EXPECT_EQ(n, c.total_params());
  EXPECT_EQ(c.total_params(), micro().total_params() - c.vocab * c.d_model);
}

TEST(Transformer, PresetsMatchThePaper) {
  EXPECT_EQ(preset("30m", 32000, 512).non_embedding_params(), 30482560);
  EXPECT_EQ(preset("50m", 32000, 512).non_embedding_params(), 49556736);
  EXPECT_EQ(preset("100m", 32000, 512).non_embedding_params(), 102777856);
  EXPECT_EQ(preset("200m", 32000, 512).non_embedding_params(), 203188480);
  EXPECT_THROW(preset("7b", 32000, 512), Error);
}

// The paper's nanochat models (spec 9.4): d_model = 64 depth, heads of 128, vocabulary 65,536.
// nanochat counts every parameter (num_scaling_params): 560,988,200 ("560M") and 1,879,048,256
// ("1.9B").
TEST(Transformer, NanochatPresetsAreThePapersModels) {
  const ModelConfig d20 = preset("nanochat-d20", 65536, 2048), d32 = preset("nanochat-d32", 65536, 2048);
  std::printf("nanochat-d20: %lld parameters (%lld outside embedding and head); nanochat-d32: %lld (%lld)\n",
              static_cast<long long>(d20.total_params()), static_cast<long long>(d20.non_embedding_params()),
              static_cast<long long>(d32.total_params()), static_cast<long long>(d32.non_embedding_params()));
  EXPECT_EQ(d20.total_params(), 560988200);
  EXPECT_EQ(d32.total_params(), 1879048256);
  for (const auto& [c, depth, heads] : {std::tuple{d20, 20, 10}, std::tuple{d32, 32, 16}}) {
    EXPECT_EQ(c.n_layers, depth);
    EXPECT_EQ(c.d_model, 64 * depth);
    EXPECT_EQ(c.n_heads, heads);
    EXPECT_EQ(c.head_dim(), 128);
    EXPECT_EQ(c.kv_heads(), heads);
    EXPECT_EQ(c.d_ff, 4 * c.d_model);
    EXPECT_EQ(c.mlp, "relu2");
    EXPECT_TRUE(c.qk_norm && c.embed_norm && c.resid_x0_lambdas && !c.norm_weights && !c.tie_embeddings);
    EXPECT_EQ(c.logit_softcap, 15);
    EXPECT_EQ(c.window_pattern, "SSSL");
    EXPECT_EQ(c.init, "nanochat");
    EXPECT_EQ(c.norm_eps, 0x1p-23);  // F.rms_norm's default: float32's machine epsilon
  }
  EXPECT_EQ(preset_seq_len("nanochat-d20"), 2048);
  EXPECT_EQ(preset_seq_len("30m"), 256);
  // SSSL tiled, the last layer always full: windows of seq_len / 2 = 1024 on 15 of the 20 layers.
  int64_t windowed = 0;
  for (int64_t l = 0; l < d20.n_layers; ++l) windowed += d20.attention_window(l) == 1024;
  EXPECT_EQ(windowed, 15);
  EXPECT_EQ(d20.attention_window(3), -1);
  EXPECT_EQ(d20.attention_window(19), -1);
}

// nanochat's dial: depth 26 is the spec's 1.1B model; heads follow base_train's find_num_heads,
// Python's round() included (depth 5: 320 / 128 = 2.5 rounds to 2, and 2 divides 320).
TEST(Transformer, DepthDerivesTheShapeAsNanochat) {
  const ModelConfig d26 = resolve("nanochat-d20", {.depth = 26}, 65536, 2048);
  EXPECT_EQ(d26.n_layers, 26);
  EXPECT_EQ(d26.d_model, 1664);
  EXPECT_EQ(d26.n_heads, 13);
  EXPECT_EQ(d26.d_ff, 4 * 1664);
  EXPECT_EQ(d26.total_params(), 1081999412);
  EXPECT_EQ(nanochat_heads(320, 128), 2);
  EXPECT_EQ(nanochat_heads(64, 128), 1);
  EXPECT_EQ(nanochat_heads(192, 128), 2);  // 1.5 rounds to 2
  EXPECT_EQ(resolve("nanochat-d20", {.depth = 5}, 100, 64).n_heads, 2);
  // On a Llama preset the dial sets the shape, SwiGLU's hidden size following d_model.
  const ModelConfig llama = resolve("tiny", {.depth = 12}, 100, 64);
  EXPECT_EQ(llama.d_model, 768);
  EXPECT_EQ(llama.n_heads, 6);
  EXPECT_EQ(llama.d_ff, preset("50m", 100, 64).d_ff);
  EXPECT_EQ(llama.mlp, "swiglu");
  // Explicit keys win over the dial and the preset.
  const ModelConfig mine =
      resolve("nanochat-d20", {.depth = 4, .n_heads = 4, .n_kv_heads = 2, .d_ff = 512, .qk_norm = false}, 100, 64);
  EXPECT_EQ(mine.d_model, 256);
  EXPECT_EQ(mine.n_heads, 4);
  EXPECT_EQ(mine.kv_heads(), 2);
  EXPECT_EQ(mine.d_ff, 512);
  EXPECT_FALSE(mine.qk_norm);
  EXPECT_TRUE(mine.embed_norm);
  // No overrides: the preset itself, the Llama ones unchanged.
  for (const char* name : {"tiny", "30m", "50m", "100m", "200m", "nanochat-d20"})
    EXPECT_EQ(to_json(resolve(name, {}, 32000, 512)), to_json(preset(name, 32000, 512))) << name;
}

// Every shape error names the key(s) and the values.
TEST(Transformer, BadShapesAreNamedWithTheirValues) {
  const std::vector<std::pair<ModelOverrides, std::string>> cases = {
      {{.n_heads = 3}, "model.n_heads must be >= 1 and divide model.d_model = 256, got 3"},
      {{.n_kv_heads = 3}, "model.n_kv_heads must be >= 1 (0: model.n_heads) and divide model.n_heads = 4, got 3"},
      {{.n_kv_heads = -1}, "model.n_kv_heads must be >= 1 (0: model.n_heads) and divide model.n_heads = 4, got -1"},
      {{.d_model = 48, .n_heads = 16}, "the head dimension, model.d_model / model.n_heads = 48 / 16 = 3, must be even "
                                       "for rotary embeddings"},
      {{.d_model = 200}, "model.d_model must be a positive multiple of 16, got 200"},
      {{.n_layers = 0}, "model.n_layers must be >= 1, got 0"},
      {{.d_ff = 40}, "model.d_ff must be a positive multiple of 16, got 40"},
      {{.mlp = "gelu"}, "model.mlp must be 'swiglu' or 'relu2', got 'gelu'"},
      {{.logit_softcap = -1}, "model.logit_softcap must be finite and >= 0 (0: none), got -1"},
      {{.window_pattern = "SLX"},
       "model.window_pattern must be a non-empty string of L (full attention) and S (a window of model.seq_len / 2), "
       "got 'SLX'"},
      {{.init = "xavier"}, "model.init must be 'llama' or 'nanochat', got 'xavier'"},
      {{.depth = 0}, "model.depth must be in [1, 1024], got 0"},
  };
  for (const auto& [o, message] : cases)
    EXPECT_EQ(test::error_of([&] { resolve("tiny", o, 100, 64); }), "model config (preset 'tiny'): " + message);
}

// The parameter count is the Transformer's, option by option.
TEST(Transformer, ParameterCountsAreTheModelsTensors) {
  const auto backend = make_cpu_backend();
  for (const ModelConfig& c : {micro(), nanochat_micro(), resolve("nanochat-d20", {.depth = 1, .tie_embeddings = true}, 50, 16)}) {
    Transformer model(c, linear::scheme_by_name("fp32"), *backend);
    int64_t n = 0;
    for (const Param& p : model.params()) n += p.value.size();
    EXPECT_EQ(n, c.total_params()) << to_json(c).dump();
  }
}

// nanochat's init_weights: embedding N(0, 1), head N(0, 0.001), QKV and MLP input uniform with
// the standard deviation 1 / sqrt(d_model), output projections zero, lambdas 1 and 0.
TEST(Transformer, NanochatInitIsNanochats) {
  const auto backend = make_cpu_backend();
  ModelConfig c = nanochat_micro();
  c.init = "nanochat";
  c.vocab = 4000;
  Transformer model(c, linear::scheme_by_name("fp32"), *backend);
  model.init(9);
  auto stats = [&](const std::string& name) {
    for (Param& p : model.params())
      if (p.name == name) {
        const Matrix m = backend->download(p.value);
        double s = 0, ss = 0, mx = 0;
        for (float v : m.data) s += v, ss += static_cast<double>(v) * v, mx = std::max(mx, std::fabs(double(v)));
        return std::tuple{s / m.size(), std::sqrt(ss / m.size()), mx};
      }
    ADD_FAILURE() << "no parameter " << name;
    return std::tuple{0.0, 0.0, 0.0};
  };
  const double bound = std::sqrt(3.0 / 32);
  EXPECT_NEAR(std::get<1>(stats("tok_embeddings.weight")), 1.0, 0.02);
  EXPECT_NEAR(std::get<1>(stats("output.weight")), 0.001, 2e-5);
  for (const char* w : {"layers.1.attention.wqkv.weight", "layers.0.feed_forward.w1.weight"}) {
    const auto [mean, rms, mx] = stats(w);
    EXPECT_NEAR(rms, 1 / std::sqrt(32.0), 0.05 / std::sqrt(32.0)) << w;
    EXPECT_LE(mx, bound) << w;
    EXPECT_GT(mx, 0.95 * bound) << w;
  }
  for (const char* zero : {"layers.0.attention.wo.weight", "layers.1.feed_forward.w3.weight", "x0_lambdas"})
    EXPECT_EQ(std::get<2>(stats(zero)), 0.0) << zero;
  const auto [mean, rms, mx] = stats("resid_lambdas");
  EXPECT_EQ(mean, 1.0);
  EXPECT_EQ(mx, 1.0);
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

// train.recompute: the second forward in backward makes the very operands the first one made,
// so loss and every gradient are bit-identical to a run that kept its activations, for every
// kind of scheme (quantized forward and backward, NVFP4 kept for backward, BF16), over two
// steps (so the freed operands are made again).
TEST(Transformer, RecomputeGivesBitIdenticalGradients) {
  const auto backend = make_cpu_backend();
  ModelConfig c = nanochat_micro();
  c.d_model = 128;
  c.d_ff = 128;
  c.seq_len = 64;
  const auto in = tokens(2 * 64, 1, 40), tg = tokens(2 * 64, 2, 40);
  for (const char* scheme : {"quartet2", "nvidia", "bf16"}) {
    SCOPED_TRACE(scheme);
    std::vector<Matrix> grads[2];
    double loss[2] = {0, 0};
    for (int recompute = 0; recompute < 2; ++recompute) {
      Transformer m(c, linear::scheme_by_name(scheme), *backend);
      m.init(7);
      m.set_recompute(recompute == 1);
      m.zero_grads();
      for (uint64_t step = 0; step < 2; ++step) {
        loss[recompute] += m.forward(in, tg, 2, 64);
        if (recompute) {
          EXPECT_EQ(m.saved_activation_bytes(), 0u) << "the linears kept operands under recompute";
        }
        m.backward(step, 1.0f / 128);
      }
      for (const Tensor& g : m.grads()) grads[recompute].push_back(backend->download(g));
    }
    EXPECT_EQ(loss[0], loss[1]);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i) {
      ASSERT_EQ(grads[0][i].data.size(), grads[1][i].data.size());
      EXPECT_EQ(0, std::memcmp(grads[0][i].data.data(), grads[1][i].data.data(), grads[0][i].data.size() * 4))
          << "gradient " << i << " differs with recompute";
    }
  }
}

// The activations the model takes from alloc_uninit (those an op writes whole) hold NaN on the
// CPU backend: one step of each architecture, quantized and not, with and without
// recomputation, comes out finite only if every op writes them before anything reads them.
TEST(Transformer, ActivationsLeftUnsetAreWrittenBeforeRead) {
  const auto backend = make_cpu_backend();
  ASSERT_TRUE(std::isnan(backend->download(backend->alloc_uninit(1, 1, Role::kActivation)).data[0]))
      << "the CPU backend no longer fills unset tensors with NaN: this test would check nothing";
  auto wide = [](ModelConfig c) {  // rows for quartet2's 128-token rotations
    c.d_model = 128;
    c.d_ff = 128;
    c.seq_len = 64;
    return c;
  };
  const std::vector<std::pair<std::string, ModelConfig>> configs = {
      {"llama", wide(micro())},
      {"nanochat", wide(nanochat_micro())},
      {"embed_norm, tied", wide(micro_with({.tie_embeddings = true, .embed_norm = true}))}};
  const auto in = tokens(2 * 64, 1, 40), tg = tokens(2 * 64, 2, 40);
  for (const auto& [label, c] : configs)
    for (const char* scheme : {"quartet2", "bf16"})
      for (const bool recompute : {false, true}) {
        SCOPED_TRACE(label + " " + scheme + (recompute ? " recompute" : ""));
        Transformer m(c, linear::scheme_by_name(scheme), *backend);
        m.init(5);
        m.set_recompute(recompute);
        m.zero_grads();
        EXPECT_TRUE(std::isfinite(m.forward(in, tg, 2, 64)));
        m.backward(1, 1.0f / 128);
        for (size_t i = 0; i < m.grads().size(); ++i) {
          const Matrix g = backend->download(m.grads()[i]);
          EXPECT_TRUE(std::all_of(g.data.begin(), g.data.end(), [](float v) { return std::isfinite(v); }))
              << m.params()[i].name;
        }
      }
}

}  // namespace
}  // namespace q2::model
