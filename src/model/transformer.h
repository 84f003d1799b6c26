#pragma once
// The Llama-style decoder: token embedding, n_layers x [RMSNorm -> fused QKV -> RoPE ->
// causal attention -> O; RMSNorm -> fused gate|up -> SwiGLU -> down], final RMSNorm, untied
// LM head. The seven block linears go through the linear-layer scheme; embedding, norms,
// attention and the LM head stay in float32.
#include <memory>
#include <string>
#include <vector>

#include "common/matrix.h"
#include "gemm/gemm.h"
#include "linear/linear.h"
#include "model/config.h"

namespace q2::model {

// One named parameter tensor (a vector is a 1 x n matrix).
struct Param {
  std::string name;  // Llama-style, e.g. "layers.3.attention.wqkv.weight"
  Matrix value;
  bool decay;        // AdamW weight decay applies (block linear weights only)
};

class Transformer {
 public:
  Transformer(ModelConfig config, const linear::Scheme& scheme, const gemm::Backend& backend);

  // N(0, 0.02) everywhere, the output projections of each block N(0, 0.02 / sqrt(2 L)), norms 1.
  void init(uint64_t seed);

  // Runs the batch and keeps what backward needs; returns the summed token loss (float64).
  double forward(const std::vector<uint32_t>& inputs, const std::vector<uint32_t>& targets, int64_t batch,
                 int64_t seq);
  // Accumulates d(loss_scale * summed loss) into the gradients; `seed` draws the backward's
  // rotations and rounding.
  void backward(uint64_t seed, float loss_scale);
  // Logits [batch * seq, vocab] without keeping activations (evaluation, sampling).
  Matrix logits(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq);

  std::vector<Param>& params() { return params_; }
  std::vector<Matrix>& grads() { return grads_; }
  void zero_grads();
  const ModelConfig& config() const { return config_; }
  size_t saved_activation_bytes() const;  // what the last forward kept for the block linears

 private:
  static constexpr int kLinears = 4;  // fused qkv, o, fused gate|up, down
  struct LayerCache {
    Matrix x_in, qkv, x_mid, h12;  // the linears keep their own inputs, as their scheme saves them
    std::vector<float> rstd1, rstd2, probs;
    linear::Saved saved[kLinears];
  };
  Matrix run(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq, bool keep);
  Matrix linear_forward(int layer, int which, const Matrix& x, const Matrix& w, bool keep);
  Matrix linear_backward(int layer, int which, const Matrix& dy, uint64_t seed, Matrix& dw);

  ModelConfig config_;
  std::vector<linear::Linear> linears_;  // one per (layer, which)
  std::vector<Param> params_;
  std::vector<Matrix> grads_;
  // Activation caches of the last kept forward.
  std::vector<LayerCache> cache_;
  std::vector<uint32_t> inputs_, targets_;
  int64_t batch_ = 0, seq_ = 0;
  Matrix final_in_, final_out_, dlogits_;
  std::vector<float> final_rstd_;
};

}  // namespace q2::model
