#include "model/transformer.h"

#include <cmath>

#include "common/error.h"
#include "model/cpu_ops.h"
#include "quant/philox.h"

namespace q2::model {

namespace {

enum Which { kQkv = 0, kO = 1, kW12 = 2, kDown = 3 };
constexpr int kLinears = 4;
const char* const kLinearNames[kLinears] = {"attention.wqkv", "attention.wo", "feed_forward.w12", "feed_forward.w3"};

// Parameter indices: 0 embedding, then 6 per layer, then final norm and LM head.
constexpr int kPerLayer = 6;
enum LayerParam { kAttnNorm = 0, kWqkv = 1, kWo = 2, kFfnNorm = 3, kW12p = 4, kW3 = 5 };
int layer_param(int layer, int which) { return 1 + kPerLayer * layer + which; }

float* vec(Matrix& m) { return m.data.data(); }

Matrix pad_rows(const Matrix& m, int64_t rows) {
  if (rows == m.rows) return m;
  Matrix p(rows, m.cols);
  std::copy(m.data.begin(), m.data.end(), p.data.begin());
  return p;
}

Matrix first_rows(Matrix m, int64_t rows) {
  m.rows = rows;
  m.data.resize(static_cast<size_t>(rows * m.cols));
  return m;
}

}  // namespace

Transformer::Transformer(ModelConfig config, const linear::Scheme& scheme, const gemm::Backend& backend)
    : config_(std::move(config)) {
  config_.validate();
  const int64_t d = config_.d_model, h = config_.d_ff, v = config_.vocab;
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay) {
    params_.push_back({std::move(name), Matrix(rows, cols), decay});
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
    for (int w = 0; w < kLinears; ++w) linears_.emplace_back(scheme, backend, p + kLinearNames[w]);
  }
  add("norm.weight", 1, d, false);
  add("output.weight", v, d, false);
  for (const Param& p : params_) grads_.emplace_back(p.value.rows, p.value.cols);
  cache_.resize(static_cast<size_t>(config_.n_layers));
}

void Transformer::init(uint64_t seed) {
  const double out_std = 0.02 / std::sqrt(2.0 * config_.n_layers);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    const bool norm = p.value.rows == 1;
    const bool out_proj = p.name.find("attention.wo") != std::string::npos || p.name.find("w3") != std::string::npos;
    const double sd = out_proj ? out_std : 0.02;
    for (int64_t j = 0; j < p.value.size(); ++j) {
      if (norm) {
        p.value.data[j] = 1.0f;
        continue;
      }
      // Box-Muller from the parameter's own Philox counter space: independent of layout.
      const philox::Block w = philox::words4(philox::derive_seed(seed, i), philox::kData, static_cast<uint64_t>(j));
      const double u1 = (w.v[0] + 0.5) * 0x1p-32, u2 = (w.v[1] + 0.5) * 0x1p-32;
      p.value.data[j] = static_cast<float>(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
    }
  }
}

void Transformer::zero_grads() {
  for (Matrix& g : grads_) std::fill(g.data.begin(), g.data.end(), 0.0f);
}

size_t Transformer::saved_activation_bytes() const {
  size_t b = 0;
  for (const LayerCache& c : cache_)
    for (const linear::Saved& s : c.saved) b += s.x.bytes();
  return b;
}

Matrix Transformer::linear_forward(int layer, int which, const Matrix& x, const Matrix& w, bool keep) {
  const linear::Linear& lin = linears_[static_cast<size_t>(layer * kLinears + which)];
  // Rotations and quantization along tokens need whole groups: pad with zero rows, which
  // quantize to zero and leave every product unchanged.
  const linear::ProductRecipe& wg = lin.scheme().wgrad;
  const int64_t multiple = wg.hadamard ? wg.hadamard : 16;
  const int64_t padded = (x.rows + multiple - 1) / multiple * multiple;
  linear::Saved scratch;
  linear::Saved& saved = keep ? cache_[static_cast<size_t>(layer)].saved[which] : scratch;
  return first_rows(lin.forward(pad_rows(x, padded), w, saved), x.rows);
}

Matrix Transformer::linear_backward(int layer, int which, const Matrix& dy, uint64_t seed, Matrix& dw) {
  const linear::Linear& lin = linears_[static_cast<size_t>(layer * kLinears + which)];
  const linear::Saved& saved = cache_[static_cast<size_t>(layer)].saved[which];
  linear::Grads g = lin.backward(pad_rows(dy, saved.x.rows()), saved,
                                 philox::derive_seed(seed, static_cast<uint64_t>(layer * kLinears + which)));
  cpu::add_inplace(dw, g.dw);
  return first_rows(std::move(g.dx), dy.rows);
}

Matrix Transformer::run(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq, bool keep) {
  const ModelConfig& c = config_;
  if (static_cast<int64_t>(inputs.size()) != batch * seq)
    throw Error("model input has " + std::to_string(inputs.size()) + " tokens, expected batch x seq = " +
                std::to_string(batch * seq));
  if (seq > c.seq_len)
    throw Error("sequence length " + std::to_string(seq) + " exceeds the model's " + std::to_string(c.seq_len));
  const int64_t T = batch * seq, d = c.d_model;
  Matrix x(T, d);
  cpu::embedding_forward(params_[0].value, inputs, x);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerCache local;
    LayerCache& k = keep ? cache_[static_cast<size_t>(l)] : local;
    auto P = [&](int which) -> Matrix& { return params_[static_cast<size_t>(layer_param(l, which))].value; };
    k.x_in = x;
    Matrix a(T, d);
    cpu::rmsnorm_forward(x, vec(P(kAttnNorm)), c.norm_eps, a, k.rstd1);
    k.qkv = linear_forward(l, kQkv, a, P(kWqkv), keep);
    cpu::rope(k.qkv, 0, c.n_heads, c.head_dim(), seq, c.rope_theta, 1);
    cpu::rope(k.qkv, d, c.n_heads, c.head_dim(), seq, c.rope_theta, 1);
    Matrix att(T, d);
    cpu::attention_forward(k.qkv, batch, seq, c.n_heads, att, k.probs);
    cpu::add_inplace(x, linear_forward(l, kO, att, P(kWo), keep));
    k.x_mid = x;
    Matrix m(T, d);
    cpu::rmsnorm_forward(x, vec(P(kFfnNorm)), c.norm_eps, m, k.rstd2);
    k.h12 = linear_forward(l, kW12, m, P(kW12p), keep);
    Matrix g(T, c.d_ff);
    cpu::swiglu_forward(k.h12, g);
    cpu::add_inplace(x, linear_forward(l, kDown, g, P(kW3), keep));
  }
  Matrix xf(T, d);
  std::vector<float> rstd;
  cpu::rmsnorm_forward(x, vec(params_[params_.size() - 2].value), c.norm_eps, xf, rstd);
  Matrix logits(T, c.vocab);
  cpu::matmul(xf, false, params_.back().value, true, logits);
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
  const Matrix logits = run(inputs, batch, seq, true);
  inputs_ = inputs;
  targets_ = targets;
  batch_ = batch;
  seq_ = seq;
  dlogits_ = Matrix(logits.rows, logits.cols);
  // d(sum of losses)/d logits, scaled by the caller's loss_scale in backward.
  return cpu::cross_entropy(logits, targets, &dlogits_, 1.0f);
}

Matrix Transformer::logits(const std::vector<uint32_t>& inputs, int64_t batch, int64_t seq) {
  return run(inputs, batch, seq, false);
}

void Transformer::backward(uint64_t seed, float loss_scale) {
  if (inputs_.empty()) throw Error("backward called before forward");
  const ModelConfig& c = config_;
  const int64_t T = batch_ * seq_, d = c.d_model;
  for (float& g : dlogits_.data) g *= loss_scale;
  const size_t head = params_.size() - 1, fnorm = params_.size() - 2;
  cpu::matmul(dlogits_, true, final_out_, false, grads_[head], 1.0f, true);
  Matrix dxf(T, d);
  cpu::matmul(dlogits_, false, params_[head].value, false, dxf);
  Matrix dx(T, d);
  cpu::rmsnorm_backward(dxf, final_in_, vec(params_[fnorm].value), final_rstd_, dx, vec(grads_[fnorm]));
  for (int l = static_cast<int>(c.n_layers) - 1; l >= 0; --l) {
    LayerCache& k = cache_[static_cast<size_t>(l)];
    auto P = [&](int which) -> Matrix& { return params_[static_cast<size_t>(layer_param(l, which))].value; };
    auto G = [&](int which) -> Matrix& { return grads_[static_cast<size_t>(layer_param(l, which))]; };
    // MLP: x = x_mid + down(swiglu(w12(norm(x_mid))))
    const Matrix dg = linear_backward(l, kDown, dx, seed, G(kW3));
    Matrix dh12(T, 2 * c.d_ff);
    cpu::swiglu_backward(dg, k.h12, dh12);
    const Matrix dm = linear_backward(l, kW12, dh12, seed, G(kW12p));
    cpu::rmsnorm_backward(dm, k.x_mid, vec(P(kFfnNorm)), k.rstd2, dx, vec(G(kFfnNorm)));
    // Attention: x_mid = x_in + wo(attn(rope(wqkv(norm(x_in)))))
    const Matrix datt = linear_backward(l, kO, dx, seed, G(kWo));
    Matrix dqkv(T, 3 * d);
    cpu::attention_backward(datt, k.qkv, k.probs, batch_, seq_, c.n_heads, dqkv);
    cpu::rope(dqkv, 0, c.n_heads, c.head_dim(), seq_, c.rope_theta, -1);
    cpu::rope(dqkv, d, c.n_heads, c.head_dim(), seq_, c.rope_theta, -1);
    const Matrix da = linear_backward(l, kQkv, dqkv, seed, G(kWqkv));
    cpu::rmsnorm_backward(da, k.x_in, vec(P(kAttnNorm)), k.rstd1, dx, vec(G(kAttnNorm)));
  }
  cpu::embedding_backward(dx, inputs_, grads_[0]);
}

}  // namespace q2::model
