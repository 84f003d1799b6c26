#include "model/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <type_traits>

#include "common/error.h"

namespace q2::model {

namespace {

// The shortest text that reads back as v.
std::string str(double v) {
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

bool has_window(const std::string& pattern) { return pattern.find('S') != std::string::npos; }

}  // namespace

int64_t ModelConfig::attention_window(int64_t layer) const {
  if (layer == n_layers - 1 || window_pattern.empty()) return -1;  // the last layer sees everything
  return window_pattern[static_cast<size_t>(layer) % window_pattern.size()] == 'S' ? seq_len / 2 : -1;
}

int64_t ModelConfig::non_embedding_params() const {
  const int64_t d = d_model, norms = norm_weights ? 1 : 0;
  // [q | k | v] and O, [gate | up] (or up) and down, the two norm gains.
  const int64_t per_layer = (qkv_rows() + d) * d + (mlp_in_rows() + d_ff) * d + 2 * norms * d;
  return n_layers * per_layer + norms * d + (resid_x0_lambdas ? 2 * n_layers : 0);
}

int64_t ModelConfig::total_params() const {
  return non_embedding_params() + (tie_embeddings ? 1 : 2) * vocab * d_model;
}

void ModelConfig::validate() const {
  auto bad = [&](const std::string& what) { throw Error("model config (preset '" + preset + "'): " + what); };
  auto got = [](int64_t v) { return ", got " + std::to_string(v); };
  if (n_layers < 1) bad("model.n_layers must be >= 1" + got(n_layers));
  if (d_model < 16 || d_model % 16 != 0) bad("model.d_model must be a positive multiple of 16" + got(d_model));
  if (n_heads < 1 || d_model % n_heads != 0)
    bad("model.n_heads must be >= 1 and divide model.d_model = " + std::to_string(d_model) + got(n_heads));
  if (n_kv_heads < 0 || n_heads % kv_heads() != 0)
    bad("model.n_kv_heads must be >= 1 (0: model.n_heads) and divide model.n_heads = " + std::to_string(n_heads) +
        got(n_kv_heads));
  if (head_dim() % 2 != 0)
    bad("the head dimension, model.d_model / model.n_heads = " + std::to_string(d_model) + " / " +
        std::to_string(n_heads) + " = " + std::to_string(head_dim()) + ", must be even for rotary embeddings");
  if (d_ff < 16 || d_ff % 16 != 0) bad("model.d_ff must be a positive multiple of 16" + got(d_ff));
  if (mlp != "swiglu" && mlp != "relu2") bad("model.mlp must be 'swiglu' or 'relu2', got '" + mlp + "'");
  if (init != "llama" && init != "nanochat") bad("model.init must be 'llama' or 'nanochat', got '" + init + "'");
  if (window_pattern.empty() || window_pattern.find_first_not_of("LS") != std::string::npos)
    bad("model.window_pattern must be a non-empty string of L (full attention) and S (a window of model.seq_len / "
        "2), got '" + window_pattern + "'");
  if (!(logit_softcap >= 0 && std::isfinite(logit_softcap)))
    bad("model.logit_softcap must be finite and >= 0 (0: none), got " + str(logit_softcap));
  if (!(rope_theta > 0 && std::isfinite(rope_theta))) bad("model.rope_theta must be finite and > 0, got " + str(rope_theta));
  if (!(norm_eps > 0 && std::isfinite(norm_eps))) bad("model.norm_eps must be finite and > 0, got " + str(norm_eps));
  if (vocab < 2) bad("vocab must be at least 2" + got(vocab));
  if (seq_len < 1) bad("model.seq_len must be >= 1" + got(seq_len));
  // Far above any model trained here, and low enough that no parameter count overflows int64
  // (a checkpoint's header is checked against its size with them).
  if (n_layers > 4096 || d_model > 65536 || d_ff > (1 << 20) || vocab > (1 << 24) || seq_len > (1 << 24))
    bad("a size is out of range (n_layers <= 4096, d_model <= 65536, d_ff <= 1048576, vocab and seq_len <= 16777216)");
}

std::vector<ModelConfig::Extension> ModelConfig::extensions() const {
  std::vector<Extension> e;
  if (kv_heads() != n_heads)
    e.push_back({"model.n_kv_heads = " + std::to_string(kv_heads()) + " (grouped-query attention)", true});
  if (mlp != "swiglu") e.push_back({"model.mlp = \"" + mlp + "\"", false});
  if (qk_norm) e.push_back({"model.qk_norm = true", false});
  if (tie_embeddings) e.push_back({"model.tie_embeddings = true", true});
  if (!norm_weights) e.push_back({"model.norm_weights = false", true});
  if (embed_norm) e.push_back({"model.embed_norm = true", false});
  if (resid_x0_lambdas) e.push_back({"model.resid_x0_lambdas = true", false});
  if (logit_softcap > 0) e.push_back({"model.logit_softcap = " + str(logit_softcap), false});
  if (n_layers > 1 && has_window(window_pattern))
    e.push_back({"model.window_pattern = \"" + window_pattern + "\" (sliding-window attention)", false});
  return e;
}

namespace {

int64_t swiglu_hidden(int64_t d) { return 256 * ((8 * d / 3 + 255) / 256); }
int64_t mlp_hidden(const std::string& mlp, int64_t d) { return mlp == "relu2" ? 4 * d : swiglu_hidden(d); }

constexpr const char* kNanochat = "nanochat-d";

// nanochat's GPT (gpt.py and base_train.py at f5425245): d_model = 64 depth, heads of 128.
ModelConfig nanochat(ModelConfig c, int64_t depth) {
  c.n_layers = depth;
  c.d_model = 64 * depth;
  c.n_heads = nanochat_heads(c.d_model, 128);
  return nanochat_architecture(c);
}

}  // namespace

ModelConfig nanochat_architecture(ModelConfig c) {
  c.mlp = "relu2";
  c.d_ff = mlp_hidden(c.mlp, c.d_model);
  c.qk_norm = true;
  c.tie_embeddings = false;
  c.norm_weights = false;
  c.embed_norm = true;
  c.resid_x0_lambdas = true;
  c.logit_softcap = 15;
  c.window_pattern = "SSSL";
  c.init = "nanochat";
  c.norm_eps = 0x1p-23;  // F.rms_norm's default eps: float32's machine epsilon
  return c;
}

int64_t nanochat_heads(int64_t d_model, int64_t target_head_dim) {
  // Python's round(): halves to even, as std::nearbyint in the default rounding mode.
  const int64_t ideal = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(static_cast<double>(d_model) /
                                                                                 static_cast<double>(target_head_dim))));
  for (int64_t offset = 0; offset < d_model; ++offset)
    for (const int64_t candidate : {ideal + offset, ideal - offset})
      if (candidate > 0 && d_model % candidate == 0) return candidate;
  return 1;
}

int64_t preset_seq_len(const std::string& name) { return name.rfind(kNanochat, 0) == 0 ? 2048 : 256; }

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
  else if (name == "nanochat-d20") c = nanochat(c, 20);
  else if (name == "nanochat-d32") c = nanochat(c, 32);
  else throw Error("unknown model preset '" + name + "' (known: tiny, 30m, 50m, 100m, 200m, nanochat-d20, nanochat-d32)");
  c.validate();
  return c;
}

ModelConfig resolve(const std::string& preset_name, const ModelOverrides& o, int64_t vocab, int64_t seq_len) {
  ModelConfig c = preset(preset_name, vocab, seq_len);
  if (o.depth) {
    if (*o.depth < 1 || *o.depth > 1024)
      throw Error("model config (preset '" + preset_name + "'): model.depth must be in [1, 1024], got " +
                  std::to_string(*o.depth));
    c.n_layers = *o.depth;
    c.d_model = 64 * *o.depth;
    c.n_heads = nanochat_heads(o.d_model.value_or(c.d_model), 128);
  }
  // Through the JSON form, whose reader checks every key's type and the whole.
  nlohmann::json j = to_json(c);
  for_each_model_key(o, [&](const char* key, const auto& v) {
    if (v) j[key] = *v;
  });
  if (!o.n_kv_heads) j["n_kv_heads"] = 0;  // follows model.n_heads
  if (!o.d_ff) j["d_ff"] = mlp_hidden(j["mlp"].get<std::string>(), j["d_model"].get<int64_t>());
  return model_config_from_json(j);
}

nlohmann::json to_json(const ModelConfig& c) {
  nlohmann::json j = {{"preset", c.preset}, {"vocab", c.vocab}, {"seq_len", c.seq_len}};
  for_each_model_key(c, [&](const char* key, const auto& v) { j[key] = v; });
  j["n_kv_heads"] = c.kv_heads();
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  // The keys of the first checkpoints are required; the later ones default.
  static const std::vector<std::string> required = {"n_layers", "d_model", "n_heads", "d_ff", "rope_theta", "norm_eps"};
  auto read = [&](const std::string& key, auto& v) {
    if (!j.contains(key)) {
      if (key == "preset" || key == "vocab" || key == "seq_len" ||
          std::find(required.begin(), required.end(), key) != required.end())
        throw Error("model config: '" + key + "' is missing");
      return;
    }
    const nlohmann::json& x = j.at(key);
    using T = std::remove_cvref_t<decltype(v)>;
    // nlohmann casts a float to an integer as it is: undefined behaviour out of range.
    const bool ok = std::is_same_v<T, bool>      ? x.is_boolean()
                    : std::is_integral_v<T>      ? x.is_number_integer()
                    : std::is_floating_point_v<T> ? x.is_number()
                                                 : x.is_string();
    if (!ok) throw Error("model config: '" + key + "' has the wrong type: " + x.dump());
    x.get_to(v);
  };
  read("preset", c.preset);
  read("vocab", c.vocab);
  read("seq_len", c.seq_len);
  for_each_model_key(c, [&](const char* key, auto& v) { read(key, v); });
  if (c.n_kv_heads == c.n_heads) c.n_kv_heads = 0;
  c.validate();
  return c;
}

}  // namespace q2::model
