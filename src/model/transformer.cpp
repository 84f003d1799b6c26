#include "model/transformer.h"

#include <cmath>

#include "common/error.h"
#include "quant/philox.h"
#include "quant/seeds.h"

namespace q2::model {

namespace {

enum Which { kQkv = 0, kO = 1, kW12 = 2, kDown = 3 };
const char* const kLinearNames[] = {"attention.wqkv", "attention.wo", "feed_forward.w12", "feed_forward.w3"};

// Parameter indices: 0 embedding, then 6 per layer, then final norm and LM head.
constexpr int kPerLayer = 6;
enum LayerParam { kAttnNorm = 0, kWqkv = 1, kWo = 2, kFfnNorm = 3, kW12p = 4, kW3 = 5 };
int layer_param(int layer, int which) { return 1 + kPerLayer * layer + which; }

}  // namespace

Transformer::Transformer(ModelConfig config, const linear::Scheme& scheme, Backend& backend)
    : config_(std::move(config)), backend_(backend) {
  config_.validate();
  const int64_t d = config_.d_model, h = config_.d_ff, v = config_.vocab;
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay) {
    params_.push_back({std::move(name), backend_.alloc(rows, cols, Role::kParam), decay});
  };
  add("tok_embeddings.weight", v, d, false);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attention_norm.weight", 1, d, false);
    add(p + "attention.wqkv.weight", 3 * d, d, true);
    add(p + "attention.wo.weight", d, d, true);
    add(p + "ffn_norm.weight", 1, d, false);
    add(p + "feed_forward.w12.weight", 2 * h, d, true);
    add(p + "feed_forward.w3.weight", d, h, true);
    for (int w = 0; w < kLinears; ++w) linears_.push_back(backend_.make_linear(scheme, p + kLinearNames[w]));
  }
  add("norm.weight", 1, d, false);
  add("output.weight", v, d, false);
  for (const Param& p : params_) grads_.push_back(backend_.alloc(p.value.rows, p.value.cols, Role::kParam));
  cache_.resize(static_cast<size_t>(config_.n_layers));
}

void Transformer::init(uint64_t seed) {
  const double out_std = 0.02 / std::sqrt(2.0 * config_.n_layers);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    Matrix m(p.value.rows, p.value.cols);
    const bool norm = m.rows == 1;
    const bool out_proj = p.name.find("attention.wo") != std::string::npos || p.name.find("w3") != std::string::npos;
    const double sd = out_proj ? out_std : 0.02;
    for (int64_t j = 0; j < m.size(); ++j) {
      if (norm) {
        m.data[j] = 1.0f;
        continue;
      }
      // Box-Muller from the parameter's own Philox counter space: independent of layout.
      const philox::Block w = philox::words4(seeds::parameter_init(seed, i), philox::kData, static_cast<uint64_t>(j));
      const double u1 = (w.v[0] + 0.5) * 0x1p-32, u2 = (w.v[1] + 0.5) * 0x1p-32;
      m.data[j] = static_cast<float>(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
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

namespace {
std::string linear_name(int layer, int which) { return "layers." + std::to_string(layer) + "." + kLinearNames[which]; }
}  // namespace

Tensor Transformer::linear_forward(int layer, int which, const Tensor& x, const Tensor& w, bool keep) {
  if (tap_ && keep) {
    tap_(linear_name(layer, which) + ".x", x);
    tap_(linear_name(layer, which) + ".w", w);
  }
  return linear(layer, which).forward(x, w, keep);
}

Tensor Transformer::linear_backward(int layer, int which, const Tensor& dy, uint64_t seed, Tensor& dw) {
  if (tap_) tap_(linear_name(layer, which) + ".dy", dy);
  return linear(layer, which).backward(dy, seed, dw);
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
  Tensor x = B.alloc(T, d, Role::kActivation);
  B.embedding_forward(params_[0].value, inputs, x);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerCache local;
    LayerCache& k = keep ? cache_[static_cast<size_t>(l)] : local;
    auto P = [&](int which) -> Tensor& { return params_[static_cast<size_t>(layer_param(l, which))].value; };
    k.x_in = B.clone(x);
    Tensor a = B.alloc(T, d, Role::kActivation);
    B.rmsnorm_forward(x, P(kAttnNorm), c.norm_eps, a, k.rstd1);
    k.qkv = linear_forward(l, kQkv, a, P(kWqkv), keep);
    B.rope(k.qkv, 0, c.n_heads, c.head_dim(), seq, c.rope_theta, 1);
    B.rope(k.qkv, d, c.n_heads, c.head_dim(), seq, c.rope_theta, 1);
    Tensor att = B.alloc(T, d, Role::kActivation);
    B.attention_forward(k.qkv, batch, seq, c.n_heads, att, k.attention);
    B.add_inplace(x, linear_forward(l, kO, att, P(kWo), keep));
    k.x_mid = B.clone(x);
    Tensor m = B.alloc(T, d, Role::kActivation);
    B.rmsnorm_forward(x, P(kFfnNorm), c.norm_eps, m, k.rstd2);
    k.h12 = linear_forward(l, kW12, m, P(kW12p), keep);
    Tensor g = B.alloc(T, c.d_ff, Role::kActivation);
    B.swiglu_forward(k.h12, g);
    B.add_inplace(x, linear_forward(l, kDown, g, P(kW3), keep));
  }
  Tensor xf = B.alloc(T, d, Role::kActivation), rstd;
  B.rmsnorm_forward(x, params_[params_.size() - 2].value, c.norm_eps, xf, rstd);
  Tensor logits = B.alloc(T, c.vocab, Role::kActivation);
  B.matmul(xf, false, params_.back().value, true, logits, 1.0f, false);
  if (keep) {
    final_in_ = std::move(x);
    final_out_ = std::move(xf);
    final_rstd_ = std::move(rstd);
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
  dlogits_ = backend_.alloc(logits.rows, logits.cols, Role::kActivation);
  // d(sum of losses)/d logits, scaled by the caller's loss_scale in backward.
  return backend_.cross_entropy(logits, targets, &dlogits_, 1.0f);
}

Tensor Transformer::logits(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq) {
  return run(inputs, batch, seq, false);
}

void Transformer::backward(uint64_t seed, float loss_scale, const GradsReady& ready) {
  if (inputs_.empty()) throw Error("backward called before forward");
  const ModelConfig& c = config_;
  Backend& B = backend_;
  const int64_t T = batch_ * seq_, d = c.d_model;
  auto announce = [&](size_t first, size_t count) {
    if (ready) ready(first, count);
  };
  B.scale(dlogits_, loss_scale);
  const size_t head = params_.size() - 1, fnorm = params_.size() - 2;
  B.matmul(dlogits_, true, final_out_, false, grads_[head], 1.0f, true);
  announce(head, 1);
  Tensor dxf = B.alloc(T, d, Role::kActivation);
  B.matmul(dlogits_, false, params_[head].value, false, dxf, 1.0f, false);
  Tensor dx = B.alloc(T, d, Role::kActivation);
  B.rmsnorm_backward(dxf, final_in_, params_[fnorm].value, final_rstd_, dx, grads_[fnorm]);
  announce(fnorm, 1);
  auto lseed = [&](int l, int which) { return seeds::linear_layer(seed, l * kLinears + which); };
  for (int l = static_cast<int>(c.n_layers) - 1; l >= 0; --l) {
    LayerCache& k = cache_[static_cast<size_t>(l)];
    auto P = [&](int which) -> Tensor& { return params_[static_cast<size_t>(layer_param(l, which))].value; };
    auto G = [&](int which) -> Tensor& { return grads_[static_cast<size_t>(layer_param(l, which))]; };
    // MLP: x = x_mid + down(swiglu(w12(norm(x_mid))))
    const Tensor dg = linear_backward(l, kDown, dx, lseed(l, kDown), G(kW3));
    Tensor dh12 = B.alloc(T, 2 * c.d_ff, Role::kActivation);
    B.swiglu_backward(dg, k.h12, dh12);
    const Tensor dm = linear_backward(l, kW12, dh12, lseed(l, kW12), G(kW12p));
    B.rmsnorm_backward(dm, k.x_mid, P(kFfnNorm), k.rstd2, dx, G(kFfnNorm));
    announce(static_cast<size_t>(layer_param(l, kFfnNorm)), 3);  // ffn_norm, w12, w3
    // Attention: x_mid = x_in + wo(attn(rope(wqkv(norm(x_in)))))
    const Tensor datt = linear_backward(l, kO, dx, lseed(l, kO), G(kWo));
    Tensor dqkv = B.alloc(T, 3 * d, Role::kActivation);
    B.attention_backward(datt, k.qkv, k.attention, batch_, seq_, c.n_heads, dqkv);
    B.rope(dqkv, 0, c.n_heads, c.head_dim(), seq_, c.rope_theta, -1);
    B.rope(dqkv, d, c.n_heads, c.head_dim(), seq_, c.rope_theta, -1);
    const Tensor da = linear_backward(l, kQkv, dqkv, lseed(l, kQkv), G(kWqkv));
    B.rmsnorm_backward(da, k.x_in, P(kAttnNorm), k.rstd1, dx, G(kAttnNorm));
    announce(static_cast<size_t>(layer_param(l, kAttnNorm)), 3);  // attention_norm, wqkv, wo
  }
  B.embedding_backward(dx, inputs_, grads_[0]);
  announce(0, 1);
}

}  // namespace q2::model
