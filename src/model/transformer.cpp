#include "model/transformer.h"

#include <cmath>

#include "common/error.h"
#include "quant/philox.h"
#include "quant/seeds.h"

namespace q2::model {

namespace {

enum Which { kQkv = 0, kO = 1, kUp = 2, kDown = 3 };

// A layer's parameters in order; a model without norm gains has no kAttnNorm and kFfnNorm.
enum LayerParam { kAttnNorm = 0, kWqkv = 1, kWo = 2, kFfnNorm = 3, kWup = 4, kWdown = 5 };

}  // namespace

std::vector<Param> Transformer::param_shapes(const ModelConfig& c) {
  const int64_t d = c.d_model, h = c.d_ff, v = c.vocab;
  std::vector<Param> params;
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay) {
    Tensor t;
    t.rows = rows;
    t.cols = cols;
    params.push_back({std::move(name), t, decay});
  };
  add("tok_embeddings.weight", v, d, false);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    if (c.norm_weights) add(p + "attention_norm.weight", 1, d, false);
    add(linear_name(c, l, kQkv) + ".weight", c.qkv_rows(), d, true);
    add(linear_name(c, l, kO) + ".weight", d, d, true);
    if (c.norm_weights) add(p + "ffn_norm.weight", 1, d, false);
    add(linear_name(c, l, kUp) + ".weight", c.mlp_in_rows(), d, true);
    add(linear_name(c, l, kDown) + ".weight", d, h, true);
  }
  if (c.resid_x0_lambdas) {
    add("resid_lambdas", 1, c.n_layers, false);
    add("x0_lambdas", 1, c.n_layers, false);
  }
  if (c.norm_weights) add("norm.weight", 1, d, false);
  if (!c.tie_embeddings) add("output.weight", v, d, false);
  return params;
}

Transformer::Transformer(ModelConfig config, const linear::Scheme& scheme, Backend& backend,
                         const PrecisionOverrides& precision)
    : config_(std::move(config)), backend_(backend) {
  config_.validate();
  const ModelConfig& c = config_;
  const bool gains = c.norm_weights;
  offset_ = gains ? std::array<int, 6>{0, 1, 2, 3, 4, 5} : std::array<int, 6>{-1, 0, 1, -1, 2, 3};
  per_layer_ = gains ? 6 : 4;
  params_ = param_shapes(c);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    p.value = backend_.alloc(p.value.rows, p.value.cols, Role::kParam);
    if (p.name == "resid_lambdas") lambdas_ = i;
    if (p.name == "norm.weight") final_norm_ = i;
    if (p.name == "output.weight") head_ = i;
  }
  const std::vector<linear::Scheme> schemes = linear_schemes(c, scheme, precision);
  for (int l = 0; l < c.n_layers; ++l)
    for (int w = 0; w < kBlockLinears; ++w)
      linears_.push_back(backend_.make_linear(schemes[static_cast<size_t>(l * kBlockLinears + w)], linear_name(c, l, w)));
  for (const Param& p : params_) grads_.push_back(backend_.alloc(p.value.rows, p.value.cols, Role::kParam));
  cache_.resize(static_cast<size_t>(c.n_layers));
  block_in_.resize(static_cast<size_t>(c.n_layers));
}

std::string Transformer::linear_name(const ModelConfig& c, int layer, int which) {
  return "layers." + std::to_string(layer) + "." + block_linear_names(c)[static_cast<size_t>(which)];
}

size_t Transformer::layer_param(int64_t layer, int which) const {
  const int o = offset_[static_cast<size_t>(which)];
  return o < 0 ? kNone : 1 + per_layer_ * static_cast<size_t>(layer) + static_cast<size_t>(o);
}

AttentionDims Transformer::attention_dims(int64_t layer, int64_t batch, int64_t seq) const {
  const ModelConfig& c = config_;
  return {batch, seq, c.n_heads, c.kv_heads(), c.head_dim(), c.attention_window(layer)};
}

void Transformer::init(uint64_t seed) {
  const ModelConfig& c = config_;
  const bool nanochat = c.init == "nanochat";
  const double out_std = 0.02 / std::sqrt(2.0 * c.n_layers), bound = std::sqrt(3.0 / static_cast<double>(c.d_model));
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    Matrix m(p.value.rows, p.value.cols);
    const auto has = [&](const char* part) { return p.name.find(part) != std::string::npos; };
    const bool out_proj = has("attention.wo") || has("w3");
    enum { kConstant, kNormal, kUniform } kind = kNormal;
    double value = 0;  // the constant, or the normal's standard deviation
    if (p.name == "resid_lambdas" || (p.name != "x0_lambdas" && m.rows == 1)) kind = kConstant, value = 1;  // gains too
    else if (p.name == "x0_lambdas") kind = kConstant, value = 0;
    else if (!nanochat) value = out_proj ? out_std : 0.02;
    else if (i == 0) value = 1.0;                   // the embedding (and a head tied to it)
    else if (p.name == "output.weight") value = 0.001;
    else if (out_proj) kind = kConstant, value = 0;
    else kind = kUniform;
    // Parallel: each element draws from its own counter, so the result is the same on any thread count.
#pragma omp parallel for
    for (int64_t j = 0; j < m.size(); ++j) {
      if (kind == kConstant) {
        m.data[j] = static_cast<float>(value);
        continue;
      }
      // From the parameter's own Philox counter space: independent of layout.
      const philox::Block w = philox::words4(seeds::parameter_init(seed, i), philox::kData, static_cast<uint64_t>(j));
      const double u1 = (w.v[0] + 0.5) * 0x1p-32, u2 = (w.v[1] + 0.5) * 0x1p-32;
      m.data[j] = kind == kUniform ? static_cast<float>((2 * u1 - 1) * bound)  // U(-bound, bound)
                                   : static_cast<float>(value * std::sqrt(-2.0 * std::log(u1)) *
                                                        std::cos(2.0 * M_PI * u2));  // Box-Muller
    }
    backend_.upload(m, p.value);
  }
}

void Transformer::zero_grads() {
  for (Tensor& g : grads_) backend_.zero(g);
}

size_t Transformer::saved_activation_bytes() const {
  size_t b = 0;
  for (const auto& l : linears_) b += l->saved_bytes();
  return b;
}

Tensor Transformer::linear_forward(int layer, int which, const Tensor& x, const Tensor& w, bool keep) {
  if (tap_ && (keep || tap_inference_)) {
    tap_(linear_name(config_, layer, which) + ".x", x);
    tap_(linear_name(config_, layer, which) + ".w", w);
  }
  return linear(layer, which).forward(x, w, keep);
}

Tensor Transformer::linear_backward(int layer, int which, const Tensor& dy, uint64_t seed, Tensor& dw) {
  if (tap_) tap_(linear_name(config_, layer, which) + ".dy", dy);
  return linear(layer, which).backward(dy, seed, dw);
}

Tensor Transformer::layer_forward(int l, Tensor x, const Tensor& x0, int64_t batch, int64_t seq, LayerCache& k,
                                  bool keep) {
  const ModelConfig& c = config_;
  Backend& B = backend_;
  const int64_t T = batch * seq, d = c.d_model, hd = c.head_dim(), kvh = c.kv_heads();
  auto P = [&](int which) -> Tensor& { return params_[layer_param(l, which)].value; };
  if (c.resid_x0_lambdas) {
    Tensor mixed = B.alloc_uninit(T, d, Role::kActivation);
    B.residual_mix_forward(x, x0, params_[lambdas_].value, params_[lambdas_ + 1].value, l, mixed);
    k.x_pre = std::move(x);
    x = std::move(mixed);
  }
  // The block writes new tensors, never its input: the cache keeps x_in and x_mid without copies.
  k.x_in = x;
  Tensor a = B.alloc_uninit(T, d, Role::kActivation);
  B.rmsnorm_forward(x, gain(layer_param(l, kAttnNorm)), c.norm_eps, a, k.rstd1);
  k.qkv = linear_forward(l, kQkv, a, P(kWqkv), keep);
  B.rope(k.qkv, 0, c.n_heads + kvh, hd, seq, c.rope_theta, 1);  // q and k heads: one launch, k follows q
  if (c.qk_norm) B.head_rmsnorm_forward(k.qkv, 0, c.n_heads + kvh, hd, c.norm_eps, k.qk_rstd);  // q and k heads
  Tensor att = B.alloc_uninit(T, d, Role::kActivation);
  B.attention_forward(k.qkv, attention_dims(l, batch, seq), att, k.attention);
  Tensor x_mid = B.alloc_uninit(T, d, Role::kActivation);
  B.add(x, linear_forward(l, kO, att, P(kWo), keep), x_mid);
  k.x_mid = x_mid;
  Tensor m = B.alloc_uninit(T, d, Role::kActivation);
  B.rmsnorm_forward(x_mid, gain(layer_param(l, kFfnNorm)), c.norm_eps, m, k.rstd2);
  k.h12 = linear_forward(l, kUp, m, P(kWup), keep);
  Tensor g = B.alloc_uninit(T, c.d_ff, Role::kActivation);
  if (c.mlp == "swiglu")
    B.swiglu_forward(k.h12, g);
  else
    B.relu2_forward(k.h12, g);
  Tensor out = B.alloc_uninit(T, d, Role::kActivation);
  B.add(x_mid, linear_forward(l, kDown, g, P(kWdown), keep), out);
  return out;
}

Tensor Transformer::run(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq, bool keep) {
  const ModelConfig& c = config_;
  if (static_cast<int64_t>(inputs.size()) != batch * seq)
    throw Error("model input has " + std::to_string(inputs.size()) + " tokens, expected batch x seq = " +
                std::to_string(batch * seq));
  if (seq > c.seq_len)
    throw Error("sequence length " + std::to_string(seq) + " exceeds the model's " + std::to_string(c.seq_len));
  Backend& B = backend_;
  const int64_t T = batch * seq, d = c.d_model;
  Tensor x = B.alloc_uninit(T, d, Role::kActivation);
  B.embedding_forward(params_[0].value, inputs, x);
  if (c.embed_norm) {
    Tensor y = B.alloc_uninit(T, d, Role::kActivation), rstd;
    B.rmsnorm_forward(x, none_, c.norm_eps, y, rstd);
    if (keep) {
      emb_in_ = std::move(x);
      emb_rstd_ = std::move(rstd);
    }
    x = std::move(y);
  }
  const Tensor x0 = x;  // the same tensor: each layer's mix writes a new one
  for (int l = 0; l < c.n_layers; ++l) {
    LayerCache local;
    if (keep && recompute_) {
      block_in_[static_cast<size_t>(l)] = x;  // all backward needs: it recomputes the rest
      x = layer_forward(l, std::move(x), x0, batch, seq, local, false);
    } else {
      x = layer_forward(l, std::move(x), x0, batch, seq, keep ? cache_[static_cast<size_t>(l)] : local, keep);
    }
  }
  Tensor xf = B.alloc_uninit(T, d, Role::kActivation), rstd;
  B.rmsnorm_forward(x, gain(final_norm_), c.norm_eps, xf, rstd);
  Tensor logits = B.alloc_uninit(T, c.vocab, Role::kActivation);
  B.matmul(xf, false, params_[head_].value, true, logits, 1.0f, false);
  if (c.logit_softcap > 0) B.softcap_forward(logits, static_cast<float>(c.logit_softcap));
  if (keep) {
    final_in_ = std::move(x);
    final_out_ = std::move(xf);
    final_rstd_ = std::move(rstd);
    x0_ = x0;
  }
  return logits;
}

double Transformer::forward(const std::vector<uint32_t>& inputs, const std::vector<uint32_t>& targets, int64_t batch,
                            int64_t seq) {
  if (targets.size() != inputs.size()) throw Error("targets and inputs differ in length");
  for (uint32_t t : targets)
    if (t >= config_.vocab) throw Error("target token " + std::to_string(t) + " is outside the vocabulary");
  const Tensor logits = run(inputs, batch, seq, true);
  inputs_ = inputs;
  targets_ = targets;
  batch_ = batch;
  seq_ = seq;
  dlogits_ = backend_.alloc_uninit(logits.rows, logits.cols, Role::kActivation);
  // d(sum of losses)/d logits, scaled by the caller's loss_scale in backward.
  const double loss = backend_.cross_entropy(logits, targets, &dlogits_, 1.0f);
  if (config_.logit_softcap > 0) backend_.softcap_backward(dlogits_, logits, static_cast<float>(config_.logit_softcap));
  return loss;
}

Tensor Transformer::logits(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq) {
  return run(inputs, batch, seq, false);
}

void Transformer::backward(uint64_t seed, float loss_scale, const GradsReady& ready) {
  if (inputs_.empty()) throw Error("backward needs a forward first (each forward serves one backward)");
  const ModelConfig& c = config_;
  Backend& B = backend_;
  const int64_t T = batch_ * seq_, d = c.d_model, hd = c.head_dim(), kvh = c.kv_heads();
  auto announce = [&](size_t first, size_t count) {
    if (ready) ready(first, count);
  };
  B.scale(dlogits_, loss_scale);
  B.matmul(dlogits_, true, final_out_, false, grads_[head_], 1.0f, true);
  if (!c.tie_embeddings) announce(head_, 1);  // a tied head's gradient is the embedding's, final last
  Tensor dxf = B.alloc_uninit(T, d, Role::kActivation);
  B.matmul(dlogits_, false, params_[head_].value, false, dxf, 1.0f, false);
  Tensor dx = B.alloc(T, d, Role::kActivation);  // zeros, as dx0 and de: rmsnorm_backward and the mix add into them
  B.rmsnorm_backward(dxf, final_in_, gain(final_norm_), final_rstd_, dx, gain_grad(final_norm_));
  if (final_norm_ != kNone) announce(final_norm_, 1);
  Tensor dx0;  // what the x0 lambdas send back to x0
  if (c.resid_x0_lambdas) dx0 = B.alloc(T, d, Role::kActivation);
  const size_t half = c.norm_weights ? 3 : 2;  // parameters of each half of a block
  auto lseed = [&](int l, int which) { return seeds::linear_layer(seed, l * kBlockLinears + which); };
  for (int l = static_cast<int>(c.n_layers) - 1; l >= 0; --l) {
    LayerCache& k = cache_[static_cast<size_t>(l)];
    // The forward is deterministic: the recomputed block keeps the very operands the first pass made.
    if (recompute_) layer_forward(l, std::move(block_in_[static_cast<size_t>(l)]), x0_, batch_, seq_, k, true);
    auto G = [&](int which) -> Tensor& { return grads_[layer_param(l, which)]; };
    // MLP: x = x_mid + down(act(up(norm(x_mid))))
    const Tensor dg = linear_backward(l, kDown, dx, lseed(l, kDown), G(kWdown));
    Tensor dh12 = B.alloc_uninit(T, c.mlp_in_rows(), Role::kActivation);
    if (c.mlp == "swiglu")
      B.swiglu_backward(dg, k.h12, dh12);
    else
      B.relu2_backward(dg, k.h12, dh12);
    const Tensor dm = linear_backward(l, kUp, dh12, lseed(l, kUp), G(kWup));
    B.rmsnorm_backward(dm, k.x_mid, gain(layer_param(l, kFfnNorm)), k.rstd2, dx, gain_grad(layer_param(l, kFfnNorm)));
    announce(layer_param(l, kWdown) + 1 - half, half);  // [ffn_norm,] up, down
    // Attention: x_mid = x_in + wo(attn(qk_norm(rope(wqkv(norm(x_in))))))
    const Tensor datt = linear_backward(l, kO, dx, lseed(l, kO), G(kWo));
    Tensor dqkv = B.alloc_uninit(T, c.qkv_rows(), Role::kActivation);
    B.attention_backward(datt, k.qkv, k.attention, attention_dims(l, batch_, seq_), dqkv);
    if (c.qk_norm) B.head_rmsnorm_backward(dqkv, k.qkv, 0, c.n_heads + kvh, hd, k.qk_rstd);
    B.rope(dqkv, 0, c.n_heads + kvh, hd, seq_, c.rope_theta, -1);
    const Tensor da = linear_backward(l, kQkv, dqkv, lseed(l, kQkv), G(kWqkv));
    B.rmsnorm_backward(da, k.x_in, gain(layer_param(l, kAttnNorm)), k.rstd1, dx, gain_grad(layer_param(l, kAttnNorm)));
    announce(layer_param(l, kWo) + 1 - half, half);  // [attention_norm,] wqkv, wo
    // x_in = resid_lambdas[l] x_pre + x0_lambdas[l] x0
    if (c.resid_x0_lambdas)
      B.residual_mix_backward(dx, k.x_pre, x0_, params_[lambdas_].value, params_[lambdas_ + 1].value, l, dx0,
                              grads_[lambdas_], grads_[lambdas_ + 1]);
    if (recompute_) {  // one block's activations at a time
      k = LayerCache{};
      for (int w = 0; w < kBlockLinears; ++w) linear(l, w).release();
    }
  }
  if (c.resid_x0_lambdas) {
    announce(lambdas_, 2);
    B.add(dx, dx0, dx);  // layer 0's x_pre is x0 itself
  }
  if (c.embed_norm) {
    Tensor de = B.alloc(T, d, Role::kActivation);
    B.rmsnorm_backward(dx, emb_in_, none_, emb_rstd_, de, none_);
    dx = std::move(de);
  }
  B.embedding_backward(dx, inputs_, grads_[0]);
  announce(0, 1);
  // The activations go now, not when the next forward replaces them: room for the optimizer,
  // and the next forward's peak does not hold two sets of logit gradients.
  for (LayerCache& k : cache_) k = LayerCache{};
  dlogits_ = final_in_ = final_out_ = final_rstd_ = emb_in_ = emb_rstd_ = x0_ = Tensor{};
  inputs_.clear();
}

}  // namespace q2::model
