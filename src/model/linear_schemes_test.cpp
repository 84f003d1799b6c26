#include "model/linear_schemes.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "common/error_test_util.h"
#include "model/transformer.h"
#include "quant/philox.h"
#include "quant/seeds.h"

namespace q2::model {
namespace {

ModelConfig four_layers(const std::string& mlp = "swiglu") {
  return {.preset = "micro", .n_layers = 4, .d_model = 32, .n_heads = 2, .d_ff = 48, .vocab = 40, .seq_len = 8,
          .mlp = mlp};
}

// The assignment as text, a block per layer, a letter per linear: B bf16, Q the run's scheme.
std::string letters(const ModelConfig& c, const PrecisionOverrides& o) {
  std::string s;
  const auto schemes = linear_schemes(c, linear::scheme_by_name("quartet2"), o);
  EXPECT_EQ(schemes.size(), static_cast<size_t>(c.n_layers * kBlockLinears));
  for (size_t i = 0; i < schemes.size(); ++i) {
    if (i > 0 && i % kBlockLinears == 0) s += ' ';
    s += schemes[i].name == "bf16" ? 'B' : schemes[i].name == "quartet2" ? 'Q' : '?';
  }
  return s;
}

TEST(LinearSchemes, AssignmentIsTheHandEnumeratedOne) {
  const ModelConfig c = four_layers();
  // Linears in block order: attention.wqkv, attention.wo, feed_forward.w12, feed_forward.w3.
  EXPECT_EQ(letters(c, {}), "QQQQ QQQQ QQQQ QQQQ");
  EXPECT_EQ(letters(c, {.bf16_first_layers = 1}), "BBBB QQQQ QQQQ QQQQ");
  EXPECT_EQ(letters(c, {.bf16_last_layers = 2}), "QQQQ QQQQ BBBB BBBB");
  EXPECT_EQ(letters(c, {.bf16_first_layers = 1, .bf16_last_layers = 1}), "BBBB QQQQ QQQQ BBBB");
  EXPECT_EQ(letters(c, {.bf16_linears = {"attention.wo", "feed_forward.w3"}}), "QBQB QBQB QBQB QBQB");
  EXPECT_EQ(letters(c, {.bf16_first_layers = 1, .bf16_last_layers = 1, .bf16_linears = {"feed_forward.w12"}}),
            "BBBB QQBQ QQBQ BBBB");
  // Overlapping ends, and every block, are all BF16.
  EXPECT_EQ(letters(c, {.bf16_first_layers = 3, .bf16_last_layers = 3}), "BBBB BBBB BBBB BBBB");
  EXPECT_EQ(letters(c, {.bf16_first_layers = 4}), "BBBB BBBB BBBB BBBB");
  // The ReLU^2 MLP's up projection is w1.
  EXPECT_EQ(letters(four_layers("relu2"), {.bf16_last_layers = 1, .bf16_linears = {"feed_forward.w1", "attention.wqkv"}}),
            "BQBQ BQBQ BQBQ BBBB");
}

TEST(LinearSchemes, BadOverridesAreErrorsNamingKeyAndValue) {
  const ModelConfig c = four_layers();
  const auto error = [&](const PrecisionOverrides& o, const ModelConfig& m) {
    return test::error_of([&] { linear_schemes(m, linear::scheme_by_name("quartet2"), o); });
  };
  EXPECT_EQ(error({.bf16_first_layers = 5}, c), "config: method.bf16_first_layers must be in [0, model.n_layers = 4], got 5");
  EXPECT_EQ(error({.bf16_last_layers = -1}, c), "config: method.bf16_last_layers must be in [0, model.n_layers = 4], got -1");
  EXPECT_EQ(error({.bf16_linears = {"attn_out"}}, c),
            "config: method.bf16_linears names 'attn_out', which the model's blocks do not have; they have "
            "attention.wqkv, attention.wo, feed_forward.w12 and feed_forward.w3");
  EXPECT_EQ(error({.bf16_linears = {"feed_forward.w12"}}, four_layers("relu2")),
            "config: method.bf16_linears names 'feed_forward.w12', which the model's blocks do not have; they have "
            "attention.wqkv, attention.wo, feed_forward.w1 and feed_forward.w3");
  EXPECT_EQ(error({.bf16_linears = {"attention.wo", "attention.wo"}}, c),
            "config: method.bf16_linears names 'attention.wo' twice");
}

TEST(LinearSchemes, DescriptionGroupsLayersAlike) {
  const ModelConfig c = four_layers();
  const linear::Scheme q = linear::scheme_by_name("quartet2");
  EXPECT_EQ(describe_linear_schemes(c, linear_schemes(c, q, {})), "layers 0-3: quartet2");
  EXPECT_EQ(describe_linear_schemes(c, linear_schemes(c, q, {.bf16_first_layers = 1, .bf16_last_layers = 2,
                                                             .bf16_linears = {"attention.wo"}})),
            "layer 0: bf16\nlayer 1: attention.wqkv quartet2, attention.wo bf16, feed_forward.w12 quartet2, "
            "feed_forward.w3 quartet2\nlayers 2-3: bf16");
}

std::vector<uint32_t> tokens(int64_t n, uint64_t seed) {
  std::vector<uint32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    t[static_cast<size_t>(i)] = philox::word(seed, philox::kData, static_cast<uint64_t>(i)) % 40;
  return t;
}

// Shapes that every quartet2 product accepts (multiples of its 128-wide rotation).
ModelConfig quantizable(int64_t layers) {
  return {.preset = "micro", .n_layers = layers, .d_model = 128, .n_heads = 2, .d_ff = 128, .vocab = 40, .seq_len = 64};
}

bool same(const Matrix& a, const Matrix& b) {
  return a.data.size() == b.data.size() && std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

// One forward and backward from zeroed gradients: the loss and every gradient.
std::pair<double, std::vector<Matrix>> step(Transformer& m, Backend& b, uint64_t seed) {
  m.zero_grads();
  const double loss = m.forward(tokens(128, 1), tokens(128, 2), 2, 64);
  m.backward(seed, 1.0f / 128);
  std::vector<Matrix> grads;
  for (const Tensor& g : m.grads()) grads.push_back(b.download(g));
  return {loss, grads};
}

// A model whose overrides cover every linear is the bf16 model, bit for bit.
TEST(LinearSchemes, OverridesOfEveryLinearGiveTheBf16Model) {
  const auto backend = make_cpu_backend();
  const ModelConfig c = quantizable(2);
  const linear::Scheme q = linear::scheme_by_name("quartet2");
  Transformer bf16(c, linear::scheme_by_name("bf16"), *backend);
  bf16.init(5);
  const auto want = step(bf16, *backend, 9);
  for (const PrecisionOverrides& o :
       {PrecisionOverrides{.bf16_first_layers = 2}, PrecisionOverrides{.bf16_first_layers = 1, .bf16_last_layers = 1},
        PrecisionOverrides{.bf16_linears = {"feed_forward.w3", "attention.wqkv", "feed_forward.w12", "attention.wo"}}}) {
    Transformer m(c, q, *backend, o);
    m.init(5);
    const auto got = step(m, *backend, 9);
    EXPECT_EQ(got.first, want.first);
    for (size_t i = 0; i < got.second.size(); ++i) EXPECT_TRUE(same(got.second[i], want.second[i])) << m.params()[i].name;
  }
}

// Each linear of a model with overrides is, on the operands it met in the model, exactly the
// assigned scheme's layer and not the other's: its weight gradient is that of a lone layer of the
// assigned scheme, with the model's seed for it, fed the same X, W and dY.
TEST(LinearSchemes, EachLinearRunsExactlyItsAssignedScheme) {
  const auto backend = make_cpu_backend();
  const ModelConfig c = quantizable(3);
  const PrecisionOverrides o{.bf16_first_layers = 1, .bf16_linears = {"attention.wo"}};
  const linear::Scheme q = linear::scheme_by_name("quartet2"), b = linear::scheme_by_name("bf16");
  Transformer m(c, q, *backend, o);
  m.init(5);
  std::map<std::string, Matrix> operands;
  m.set_tap([&](const std::string& name, const Tensor& t) { operands[name] = backend->download(t); });
  const uint64_t seed = 9;
  const auto [loss, grads] = step(m, *backend, seed);
  const auto names = block_linear_names(c);
  int bf16_linears = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int w = 0; w < kBlockLinears; ++w) {
      const std::string name = "layers." + std::to_string(l) + "." + names[static_cast<size_t>(w)];
      SCOPED_TRACE(name);
      const bool want_bf16 = l == 0 || w == 1;
      bf16_linears += want_bf16;
      size_t p = 0;
      while (m.params()[p].name != name + ".weight") ++p;
      // The weight gradient of a lone layer of scheme s on the model's operands.
      auto lone = [&](const linear::Scheme& s) {
        const auto op = backend->make_linear(s, name);
        auto upload = [&](const Matrix& v, Role r) {
          Tensor t = backend->alloc(v.rows, v.cols, r);
          backend->upload(v, t);
          return t;
        };
        const Tensor x = upload(operands.at(name + ".x"), Role::kActivation);
        const Tensor wt = upload(operands.at(name + ".w"), Role::kParam);
        const Tensor dy = upload(operands.at(name + ".dy"), Role::kActivation);
        Tensor dw = backend->alloc(wt.rows, wt.cols, Role::kParam);
        op->forward(x, wt, true);
        op->backward(dy, seeds::linear_layer(seed, l * kBlockLinears + w), dw);
        return backend->download(dw);
      };
      EXPECT_TRUE(same(grads[p], lone(want_bf16 ? b : q))) << "not the assigned scheme's gradient";
      EXPECT_FALSE(same(grads[p], lone(want_bf16 ? q : b))) << "the test cannot tell the schemes apart";
    }
  }
  EXPECT_EQ(bf16_linears, 6);  // layer 0's four and the wo of layers 1 and 2
}

}  // namespace
}  // namespace q2::model
