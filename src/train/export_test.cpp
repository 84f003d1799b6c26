#include "train/export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/error_test_util.h"
#include "linear/linear.h"
#include "linear/scheme.h"
#include "train/nvfp4_export.h"

namespace q2::train {
namespace {

struct Safetensors {
  nlohmann::json header;
  std::string data;
  // Tensor `name` as float32 values (the file is written as float32).
  std::vector<float> floats(const std::string& name) const {
    const auto& o = header.at(name).at("data_offsets");
    std::vector<float> v((o[1].get<size_t>() - o[0].get<size_t>()) / 4);
    std::memcpy(v.data(), data.data() + o[0].get<size_t>(), v.size() * 4);
    return v;
  }
};

Safetensors read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return {nlohmann::json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

Matrix downloaded(model::Transformer& m, const std::string& name) {
  for (const model::Param& p : m.params())
    if (p.name == name) return m.backend().download(p.value);
  throw Error("no parameter " + name);
}

model::ModelConfig micro() {
  return {.preset = "micro", .n_layers = 2, .d_model = 32, .n_heads = 4, .d_ff = 48, .vocab = 40, .seq_len = 8};
}

// Grouped-query attention, a tied head and norms without gains are still a Llama checkpoint:
// k and v of n_kv_heads, lm_head a copy of the embedding, gains of ones.
TEST(Export, CarriesGroupedQueryTiedHeadAndGainlessNormsOver) {
  const auto backend = model::make_cpu_backend();
  model::ModelConfig c = micro();
  c.n_kv_heads = 2;
  c.tie_embeddings = true;
  c.norm_weights = false;
  model::Transformer m(c, linear::scheme_by_name("bf16"), *backend);
  m.init(4);
  const std::string path = (std::filesystem::temp_directory_path() / "q2_export_gqa.safetensors").string();
  export_safetensors(m, path, false);
  const Safetensors st = read(path);
  EXPECT_EQ(st.header["model.layers.1.self_attn.q_proj.weight"]["shape"], nlohmann::json::array({32, 32}));
  EXPECT_EQ(st.header["model.layers.1.self_attn.k_proj.weight"]["shape"], nlohmann::json::array({16, 32}));
  EXPECT_EQ(st.header["model.layers.1.self_attn.v_proj.weight"]["shape"], nlohmann::json::array({16, 32}));
  const Matrix qkv = backend->download(m.params()[1].value);  // layers.0.attention.wqkv
  const std::vector<float> v = st.floats("model.layers.0.self_attn.v_proj.weight");
  EXPECT_EQ(v, std::vector<float>(qkv.row(48), qkv.row(64)));  // after q (32 rows) and k (16)
  EXPECT_EQ(st.floats("lm_head.weight"), backend->download(m.params()[0].value).data);
  EXPECT_EQ(st.floats("model.norm.weight"), std::vector<float>(32, 1.0f));
  EXPECT_EQ(st.floats("model.layers.1.input_layernorm.weight"), std::vector<float>(32, 1.0f));
  std::filesystem::remove(path);
}

TEST(Export, RefusesWhatALlamaCheckpointCannotHoldNamingIt) {
  const auto backend = model::make_cpu_backend();
  model::ModelConfig c = micro();
  c.mlp = "relu2";
  c.qk_norm = c.embed_norm = c.resid_x0_lambdas = true;
  c.logit_softcap = 15;
  c.window_pattern = "SL";
  model::Transformer m(c, linear::scheme_by_name("bf16"), *backend);
  const std::string path = (std::filesystem::temp_directory_path() / "q2_export_nano.safetensors").string();
  EXPECT_EQ(test::error_of([&] { export_safetensors(m, path, true); }),
            "export: a Llama checkpoint cannot express model.mlp = \"relu2\", model.qk_norm = true, model.embed_norm = "
            "true, model.resid_x0_lambdas = true, model.logit_softcap = 15, model.window_pattern = \"SL\" "
            "(sliding-window attention) (model preset 'micro'); only grouped-query attention, tied embeddings and "
            "norms without gains carry over");
  EXPECT_FALSE(std::filesystem::exists(path));
}

// Each block linear is quantized whole, as the forward pass quantizes the fused matrix, then split
// by rows: q, k and v (gate and up) together are the forward's W_q, codes, scales and tensor scale.
TEST(Export, Nvfp4SplitsTheForwardPassQuantizedFusedWeights) {
  const auto backend = model::make_cpu_backend();
  model::ModelConfig c = micro();
  c.n_kv_heads = 2;
  const linear::Scheme scheme = linear::scheme_by_name("quartet2");
  model::Transformer m(c, scheme, *backend);
  m.init(5);
  const std::vector<SafeTensor> ts = llama_tensors(m, WeightFormat::kNvfp4, forward_weight_quantizer(scheme, "cpu"));
  std::map<std::string, const SafeTensor*> by_name;
  for (const SafeTensor& t : ts) by_name[t.name] = &t;
  const auto gemm = gemm::make_cpu_backend();
  const linear::Linear layer(scheme, *gemm);
  auto check = [&](const std::string& param, const std::vector<std::string>& parts) {
    const gemm::OwnedOperand wq = layer.forward_w(downloaded(m, param));
    ASSERT_TRUE(wq.fp4.has_value());
    std::string packed, scales;
    for (const std::string& part : parts) {
      packed += by_name.at(part + ".weight")->bytes;
      scales += by_name.at(part + ".weight_scale")->bytes;
      float t = 0;
      std::memcpy(&t, by_name.at(part + ".weight_scale_2")->bytes.data(), 4);
      EXPECT_EQ(t, wq.fp4->tensor_scale) << part;
    }
    EXPECT_EQ(packed, std::string(wq.fp4->packed.begin(), wq.fp4->packed.end())) << param;
    EXPECT_EQ(scales, std::string(wq.fp4->scales.begin(), wq.fp4->scales.end())) << param;
  };
  const std::string a = "model.layers.1.self_attn.", f = "model.layers.1.mlp.";
  check("layers.1.attention.wqkv.weight", {a + "q_proj", a + "k_proj", a + "v_proj"});
  check("layers.1.attention.wo.weight", {a + "o_proj"});
  check("layers.1.feed_forward.w12.weight", {f + "gate_proj", f + "up_proj"});
  check("layers.1.feed_forward.w3.weight", {f + "down_proj"});
  EXPECT_EQ(by_name.at(a + "k_proj.weight")->shape, (std::vector<int64_t>{16, 16}));  // 2 kv heads of 8, packed
  EXPECT_EQ(by_name.count(a + "q_proj.input_scale"), 0u);  // no calibration
  for (const std::string n : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"})
    EXPECT_EQ(by_name.at(n)->dtype, "BF16") << n;
}

}  // namespace
}  // namespace q2::train
