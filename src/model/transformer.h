#pragma once
// The decoder: token embedding, n_layers x [RMSNorm -> fused QKV -> RoPE -> causal attention
// -> O; RMSNorm -> fused gate|up -> SwiGLU -> down], final RMSNorm, LM head: Llama by default,
// and with the options of ModelConfig nanochat's GPT (grouped-query attention, QK norm after
// RoPE, sliding windows, ReLU^2 MLP, RMSNorms without gains, the embedding normed, resid / x0
// lambdas, logit softcap; or a head tied to the embedding). The block linears go through the
// linear-layer scheme; embedding, norms, attention and the LM head stay in high precision.
// Every operation runs through a Backend.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/config.h"
#include "model/linear_schemes.h"

namespace q2::model {

// One named parameter tensor (a vector is a 1 x n matrix).
struct Param {
  std::string name;  // e.g. "layers.3.attention.wqkv.weight"
  Tensor value;      // float32 master weights
  bool decay;        // AdamW weight decay applies (block linear weights only)
};

class Transformer {
 public:
  // Each block linear runs under `scheme`, or in BF16 where `precision` puts it (linear_schemes).
  Transformer(ModelConfig config, const linear::Scheme& scheme, Backend& backend,
              const PrecisionOverrides& precision = {});

  // The parameters of a model of config c, in order, as names and shapes (tensors without
  // data): what the constructor allocates, and what a memory plan counts without allocating.
  static std::vector<Param> param_shapes(const ModelConfig& c);

  // model.init "llama": N(0, 0.02) everywhere, the output projections of each block
  // N(0, 0.02 / sqrt(2 L)), norm gains 1. "nanochat" (its init_weights): embedding N(0, 1), head
  // N(0, 0.001), QKV and the MLP's input U(-sqrt(3 / d), sqrt(3 / d)), output projections 0.
  // Either way resid_lambdas 1 and x0_lambdas 0. Each tensor draws from its own Philox stream.
  void init(uint64_t seed);

  // Runs the batch and keeps what backward needs; returns the summed token loss (float64).
  double forward(const std::vector<uint32_t>& inputs, const std::vector<uint32_t>& targets, int64_t batch,
                 int64_t seq);
  // Told during backward, when given, that the gradients of params() [first, first + count)
  // are final: nothing later in this backward writes them, so their all-reduce can overlap the
  // rest. Every parameter once, in reverse layer order: LM head (unless tied), final norm, then
  // per block from the last its MLP half and its attention half, the resid / x0 lambdas, the
  // embedding (with a tied head, its gradient too).
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

  // train.recompute: the training forward keeps only each block's input, and backward runs
  // each block's forward again (its linears keeping their operands) just before its backward,
  // then frees that block's activations. Gradients are bit-identical to a run without.
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }

  // Called, while set, with the operands of every block linear: "<layer linear name>.x" and
  // ".w" where the linear keeps them for backward (the training forward, or under recompute
  // backward's second forward), ".dy" in backward (e.g. to dump real tensors). With
  // `inference`, also ".x" and ".w" of forwards that keep nothing (logits: calibration).
  using Tap = std::function<void(const std::string& name, const Tensor& t)>;
  void set_tap(Tap tap, bool inference = false) {
    tap_ = std::move(tap);
    tap_inference_ = inference;
  }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  struct LayerCache {
    Tensor x_pre, x_in, qkv, x_mid, h12, rstd1, rstd2, qk_rstd, attention;
  };
  Tensor run(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq, bool keep);
  // Block l on its input x (the residual stream), returning its output; fills k, and the
  // linears keep their operands when `keep`.
  Tensor layer_forward(int l, Tensor x, const Tensor& x0, int64_t batch, int64_t seq, LayerCache& k, bool keep);
  LinearOp& linear(int layer, int which) { return *linears_[static_cast<size_t>(layer * kBlockLinears + which)]; }
  static std::string linear_name(const ModelConfig& c, int layer, int which);
  // The index in params() of a layer's parameter (LayerParam in transformer.cpp), kNone if the
  // model has none (the norm gains of a model without them).
  size_t layer_param(int64_t layer, int which) const;
  // A norm's gain, or its gradient, or an empty tensor where the model has no gains.
  Tensor& gain(size_t index) { return index == kNone ? none_ : params_[index].value; }
  Tensor& gain_grad(size_t index) { return index == kNone ? none_ : grads_[index]; }
  AttentionDims attention_dims(int64_t layer, int64_t batch, int64_t seq) const;

  ModelConfig config_;
  // Parameter layout: the embedding first, then per layer `per_layer_` tensors in the order of
  // LayerParam (`offset_`: each one's place, -1 if absent), the lambdas, the final norm, the head.
  size_t per_layer_ = 0, lambdas_ = kNone, final_norm_ = kNone, head_ = 0;
  std::array<int, 6> offset_{};
  Tensor none_;
  Backend& backend_;
  std::vector<std::unique_ptr<LinearOp>> linears_;
  std::vector<Param> params_;
  std::vector<Tensor> grads_;
  std::vector<LayerCache> cache_;
  std::vector<Tensor> block_in_;  // under recompute, each block's input
  bool recompute_ = false;
  std::vector<uint32_t> inputs_, targets_;
  int64_t batch_ = 0, seq_ = 0;
  Tensor final_in_, final_out_, final_rstd_, dlogits_;
  Tensor emb_in_, emb_rstd_, x0_;  // the embedding before its norm, and the x0 the lambdas mix in
  Tap tap_;
  bool tap_inference_ = false;
  // linear(layer, which) after telling the tap about its inputs.
  Tensor linear_forward(int layer, int which, const Tensor& x, const Tensor& w, bool keep);
  Tensor linear_backward(int layer, int which, const Tensor& dy, uint64_t seed, Tensor& dw);
};

}  // namespace q2::model
