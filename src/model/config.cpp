#include "model/config.h"

#include "common/error.h"

namespace q2::model {

int64_t ModelConfig::non_embedding_params() const {
  const int64_t per_layer = 4 * d_model * d_model + 3 * d_model * d_ff + 2 * d_model;
  return n_layers * per_layer + d_model;
}

int64_t ModelConfig::total_params() const { return non_embedding_params() + 2 * vocab * d_model; }

void ModelConfig::validate() const {
  auto bad = [&](const std::string& what) { throw Error("model config (preset '" + preset + "'): " + what); };
  if (n_layers < 1) bad("n_layers must be at least 1");
  if (d_model < 16 || d_model % 16 != 0) bad("d_model must be a positive multiple of 16");
  if (n_heads < 1 || d_model % n_heads != 0) bad("d_model must be divisible by n_heads");
  if (head_dim() % 2 != 0) bad("the head dimension must be even for rotary embeddings");
  if (d_ff < 16 || d_ff % 16 != 0) bad("d_ff must be a positive multiple of 16");
  if (vocab < 2) bad("vocab must be at least 2");
  if (seq_len < 1) bad("seq_len must be at least 1");
  // Far above any model trained here, and low enough that no parameter count overflows int64
  // (a checkpoint's header is checked against its size with them).
  if (n_layers > 4096 || d_model > 65536 || d_ff > (1 << 20) || vocab > (1 << 24) || seq_len > (1 << 24))
    bad("a size is out of range (n_layers <= 4096, d_model <= 65536, d_ff <= 1048576, vocab and seq_len <= 16777216)");
}

namespace {
int64_t swiglu_hidden(int64_t d) { return 256 * ((8 * d / 3 + 255) / 256); }
}  // namespace

ModelConfig preset(const std::string& name, int64_t vocab, int64_t seq_len) {
  ModelConfig c;
  c.preset = name;
  c.vocab = vocab;
  c.seq_len = seq_len;
  auto set = [&](int64_t layers, int64_t d, int64_t heads) {
    c.n_layers = layers;
    c.d_model = d;
    c.n_heads = heads;
    c.d_ff = swiglu_hidden(d);
  };
  if (name == "tiny") set(4, 256, 4);
  else if (name == "30m") set(6, 640, 5);
  else if (name == "50m") set(7, 768, 6);
  else if (name == "100m") set(8, 1024, 8);
  else if (name == "200m") set(10, 1280, 10);
  else throw Error("unknown model preset '" + name + "' (known: tiny, 30m, 50m, 100m, 200m)");
  c.validate();
  return c;
}

nlohmann::json to_json(const ModelConfig& c) {
  return {{"preset", c.preset},   {"n_layers", c.n_layers}, {"d_model", c.d_model},       {"n_heads", c.n_heads},
          {"d_ff", c.d_ff},       {"vocab", c.vocab},       {"seq_len", c.seq_len},       {"rope_theta", c.rope_theta},
          {"norm_eps", c.norm_eps}};
}

namespace {
// nlohmann casts a float to an integer as it is: undefined behaviour out of range.
int64_t integer(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  if (!v.is_number_integer()) throw Error(std::string("model config: '") + key + "' must be an integer, got " + v.dump());
  return v.get<int64_t>();
}
}  // namespace

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  c.preset = j.at("preset").get<std::string>();
  c.n_layers = integer(j, "n_layers");
  c.d_model = integer(j, "d_model");
  c.n_heads = integer(j, "n_heads");
  c.d_ff = integer(j, "d_ff");
  c.vocab = integer(j, "vocab");
  c.seq_len = integer(j, "seq_len");
  c.rope_theta = j.at("rope_theta").get<double>();
  c.norm_eps = j.at("norm_eps").get<double>();
  c.validate();
  return c;
}

}  // namespace q2::model
