#pragma once
// Llama-style decoder shapes. Presets follow the paper's sweep (spec 9.1); `tiny` is for CPU demos.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace q2::model {

struct ModelConfig {
  std::string preset = "tiny";
  int64_t n_layers = 4, d_model = 256, n_heads = 4, d_ff = 768;  // d_ff: SwiGLU hidden size h
  int64_t vocab = 8192, seq_len = 256;
  double rope_theta = 10000.0, norm_eps = 1e-5;

  int64_t head_dim() const { return d_model / n_heads; }
  // Parameters outside the token embedding and LM head (the paper's N).
  int64_t non_embedding_params() const;
  int64_t total_params() const;
  void validate() const;  // throws naming the bad field
};

// tiny, 30m, 50m, 100m, 200m; SwiGLU hidden = 256 * ceil((8d/3) / 256).
ModelConfig preset(const std::string& name, int64_t vocab, int64_t seq_len);

nlohmann::json to_json(const ModelConfig& c);
ModelConfig model_config_from_json(const nlohmann::json& j);

}  // namespace q2::model
