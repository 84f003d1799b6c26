#pragma once
// The Llama-style decoder: token embedding, n_layers x [RMSNorm -> fused QKV -> RoPE ->
// causal attention -> O; RMSNorm -> fused gate|up -> SwiGLU -> down], final RMSNorm, untied
// LM head. The seven block linears go through the linear-layer scheme; embedding, norms,
// attention and the LM head stay in high precision. Every operation runs through a Backend.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/config.h"

namespace q2::model {

// One named parameter tensor (a vector is a 1 x n matrix).
struct Param {
  std::string name;  // e.g. "layers.3.attention.wqkv.weight"
  Tensor value;      // float32 master weights
  bool decay;        // AdamW weight decay applies (block linear weights only)
};

class Transformer {
 public:
  Transformer(ModelConfig config, const linear::Scheme& scheme, Backend& backend);

  // N(0, 0.02) everywhere, the output projections of each block N(0, 0.02 / sqrt(2 L)), norms 1.
  void init(uint64_t seed);

  // Runs the batch and keeps what backward needs; returns the summed token loss (float64).
  double forward(const std::vector<uint32_t>& inputs, const std::vector<uint32_t>& targets, int64_t batch,
                 int64_t seq);
  // Told during backward, when given, that the gradients of params() [first, first + count)
  // are final: nothing later in this backward writes them, so their all-reduce can overlap the
  // rest. Every parameter once, in reverse layer order: LM head, final norm, then per block
  // from the last its MLP half and its attention half, the embedding.
  using GradsReady = std::function<void(size_t first, size_t count)>;
  // Accumulates d(loss_scale * summed loss) into the gradients; `seed` draws the backward's
  // rotations and rounding.
  void backward(uint64_t seed, float loss_scale, const GradsReady& ready = nullptr);
  // Logits [batch * seq, vocab] without keeping activations (evaluation, sampling).
  Tensor logits(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq);

  std::vector<Param>& params() { return params_; }
  std::vector<Tensor>& grads() { return grads_; }
  void zero_grads();
  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  size_t saved_activation_bytes() const;  // what the last forward kept for the block linears

  // Called, while set, with the operands of every block linear: "<layer linear name>.x" and
  // ".w" in the training forward, ".dy" in backward (e.g. to dump real tensors).
  using Tap = std::function<void(const std::string& name, const Tensor& t)>;
  void set_tap(Tap tap) { tap_ = std::move(tap); }

 private:
  static constexpr int kLinears = 4;  // fused qkv, o, fused gate|up, down
  struct LayerCache {
    Tensor x_in, qkv, x_mid, h12, rstd1, rstd2, attention;
  };
  Tensor run(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq, bool keep);
  LinearOp& linear(int layer, int which) { return *linears_[static_cast<size_t>(layer * kLinears + which)]; }

  ModelConfig config_;
  Backend& backend_;
  std::vector<std::unique_ptr<LinearOp>> linears_;
  std::vector<Param> params_;
  std::vector<Tensor> grads_;
  std::vector<LayerCache> cache_;
  std::vector<uint32_t> inputs_, targets_;
  int64_t batch_ = 0, seq_ = 0;
  Tensor final_in_, final_out_, final_rstd_, dlogits_;
  Tap tap_;
  // linear(layer, which) after telling the tap about its inputs.
  Tensor linear_forward(int layer, int which, const Tensor& x, const Tensor& w, bool keep);
  Tensor linear_backward(int layer, int which, const Tensor& dy, uint64_t seed, Tensor& dw);
};

}  // namespace q2::model
