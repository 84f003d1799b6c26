#pragma once
// Decoder shapes and architecture options. The Llama presets follow the paper's sweep (spec 9.1;
// `tiny` is for CPU demos); the nanochat presets are nanochat's GPT at the commit the paper used
// (f5425245, spec 9.4). Every option's default is the Llama architecture.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace q2::model {

struct ModelConfig {
  std::string preset = "tiny";
  int64_t n_layers = 4, d_model = 256, n_heads = 4, d_ff = 768;  // d_ff: the MLP's hidden size
  int64_t vocab = 8192, seq_len = 256;
  double rope_theta = 10000.0, norm_eps = 1e-5;
  // Grouped-query attention: n_heads / n_kv_heads query heads share each key/value head; 0: n_heads.
  int64_t n_kv_heads = 0;
  std::string mlp = "swiglu";  // swiglu: silu(gate) * up; relu2: relu(up)^2 (nanochat)
  bool qk_norm = false;        // RMSNorm (no gain) of each query and key head, after RoPE as nanochat
  bool tie_embeddings = false;  // the LM head is the token embedding
  bool norm_weights = true;     // false: every RMSNorm without a learned gain (nanochat)
  bool embed_norm = false;      // RMSNorm of the token embedding (nanochat)
  // Per layer l, before the block: x <- resid_lambdas[l] x + x0_lambdas[l] x0, x0 the (normed)
  // embedding; two learned vectors, initialized to 1 and 0 (nanochat).
  bool resid_x0_lambdas = false;
  double logit_softcap = 0;  // > 0: logits <- cap tanh(logits / cap) (nanochat: 15)
  // Tiled over the layers, the last layer always L: L attends to every earlier position, S to the
  // seq_len / 2 positions before it and itself (nanochat's sliding window, "SSSL").
  std::string window_pattern = "L";
  std::string init = "llama";  // llama: N(0, 0.02), scaled output projections; nanochat: its init_weights

  int64_t head_dim() const { return d_model / n_heads; }
  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t kv_dim() const { return kv_heads() * head_dim(); }
  int64_t qkv_rows() const { return d_model + 2 * kv_dim(); }                    // fused q | k | v
  int64_t mlp_in_rows() const { return mlp == "swiglu" ? 2 * d_ff : d_ff; }      // fused gate | up, or up
  // Attention window of layer l: -1 for all earlier positions, else how many positions back.
  int64_t attention_window(int64_t layer) const;
  // Parameters outside the token embedding and LM head (the paper's N).
  int64_t non_embedding_params() const;
  int64_t total_params() const;
  void validate() const;  // throws naming the bad key and its value

  // The options that set this model apart from the Llama architecture, as "model.key = value";
  // `llama_format`: a Llama checkpoint can still hold the weights (export).
  struct Extension {
    std::string option;
    bool llama_format;
  };
  std::vector<Extension> extensions() const;
};

// Keys of the config's model section that override a preset; unset keys keep the preset's value.
// `depth` is nanochat's dial: n_layers = depth, d_model = 64 depth, heads of about 128
// (nanochat's base_train), each unless given itself. d_ff, unless given, follows the MLP: 4 d_model
// for relu2, 256 ceil((8 d_model / 3) / 256) for SwiGLU.
struct ModelOverrides {
  std::optional<int64_t> depth{}, n_layers{}, d_model{}, n_heads{}, n_kv_heads{}, d_ff{};
  std::optional<double> rope_theta{}, norm_eps{};
  std::optional<std::string> mlp{};
  std::optional<bool> qk_norm{}, tie_embeddings{}, norm_weights{}, embed_norm{}, resid_x0_lambdas{};
  std::optional<double> logit_softcap{};
  std::optional<std::string> window_pattern{}, init{};
};

// Every overridable key once, (name, member), for ModelConfig (plain values, besides depth) and
// ModelOverrides (optionals) alike.
template <class C, class F>
void for_each_model_key(C& c, F&& f) {
  f("n_layers", c.n_layers);
  f("d_model", c.d_model);
  f("n_heads", c.n_heads);
  f("n_kv_heads", c.n_kv_heads);
  f("d_ff", c.d_ff);
  f("rope_theta", c.rope_theta);
  f("norm_eps", c.norm_eps);
  f("mlp", c.mlp);
  f("qk_norm", c.qk_norm);
  f("tie_embeddings", c.tie_embeddings);
  f("norm_weights", c.norm_weights);
  f("embed_norm", c.embed_norm);
  f("resid_x0_lambdas", c.resid_x0_lambdas);
  f("logit_softcap", c.logit_softcap);
  f("window_pattern", c.window_pattern);
  f("init", c.init);
}

// tiny, 30m, 50m, 100m, 200m (SwiGLU hidden = 256 * ceil((8d/3) / 256)); nanochat-d20 (560M
// parameters) and nanochat-d32 (1.9B).
ModelConfig preset(const std::string& name, int64_t vocab, int64_t seq_len);
// The preset with the overrides applied, validated.
ModelConfig resolve(const std::string& preset_name, const ModelOverrides& o, int64_t vocab, int64_t seq_len);
// The sequence length a preset trains at unless model.seq_len says otherwise: 2048 for nanochat
// (as the paper), 256 for the others.
int64_t preset_seq_len(const std::string& name);
// `c` with nanochat's architecture (f5425245): ReLU^2 MLP of 4 d_model, QK norm, RMSNorms
// without gains and of the embedding too, the resid / x0 lambdas, logit softcap 15, sliding
// windows "SSSL", its init, F.rms_norm's eps; untied. The shape is c's.
ModelConfig nanochat_architecture(ModelConfig c);
// nanochat's base_train: the head count dividing d_model whose head dimension is nearest `target`.
int64_t nanochat_heads(int64_t d_model, int64_t target_head_dim);

nlohmann::json to_json(const ModelConfig& c);
// Keys written before an option existed are absent: they read as the option's default.
ModelConfig model_config_from_json(const nlohmann::json& j);

}  // namespace q2::model
