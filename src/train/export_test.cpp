#include "train/export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error_test_util.h"
#include "linear/scheme.h"

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

}  // namespace
}  // namespace q2::train
