#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "model/collectives.h"
#include "model/muon.h"

namespace q2::train {

double learning_rate(const TrainConfig& c, int64_t step) {
  const double warm = std::floor(c.warmup_frac * c.steps), lo = c.lr * c.min_lr_ratio;
  if (step < warm) return c.lr / 100 + (c.lr - c.lr / 100) * 0.5 * (1 - std::cos(M_PI * (step + 1) / warm));
  if (c.schedule == "wsd") {
    const double decay_start = c.steps * (1 - c.decay_frac);
    if (step < decay_start) return c.lr;
    return c.lr + (lo - c.lr) * std::min(1.0, (step + 1 - decay_start) / (c.steps - decay_start));
  }
  const double p = std::min(1.0, (step - warm + 1) / std::max(1.0, c.steps - warm));
  return lo + (c.lr - lo) * 0.5 * (1 + std::cos(M_PI * p));
}

namespace {

const char* const kAdamFirst = "AdamW's first moment";
const char* const kAdamSecond = "AdamW's second moment";

std::vector<std::string> names_of(const std::vector<model::Param>& params) {
  std::vector<std::string> n;
  for (const model::Param& p : params) n.push_back(p.name);
  return n;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// A state tensor of the shard's parameter `param`; another rank's: an empty one of that shape.
model::Tensor state_tensor(model::Backend& backend, const Shard& shard, size_t param, int64_t rows, int64_t cols) {
  if (shard.holds(param)) return backend.alloc(rows, cols, model::Role::kParam);
  model::Tensor t;
  t.rows = rows;
  t.cols = cols;
  return t;
}

OptimizerState state_of(std::string name, const char* what, size_t param, model::Tensor& t, const Shard& shard) {
  return {std::move(name), what, param, t.rows, t.cols, shard.holds(param) ? &t : nullptr};
}

}  // namespace

AdamW::AdamW(model::Backend& backend, const std::vector<model::Param>& params, Shard shard)
    : Optimizer(std::move(shard)), backend_(backend), names_(names_of(params)) {
  for (size_t i = 0; i < params.size(); ++i) {
    const model::Tensor& p = params[i].value;
    m_.push_back(state_tensor(backend, shard_, i, p.rows, p.cols));
    v_.push_back(state_tensor(backend, shard_, i, p.rows, p.cols));
  }
}

void AdamW::step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr,
                 const TrainConfig& c, int64_t t, float grad_scale) {
  const model::AdamWHyper h{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t, grad_scale};
  for (size_t i = 0; i < params.size(); ++i)
    if (shard_.holds(i)) backend_.adamw(params[i].value, grads[i], m_[i], v_[i], h, params[i].decay);
}

std::vector<OptimizerState> AdamW::state() {
  std::vector<OptimizerState> s;
  for (size_t i = 0; i < m_.size(); ++i) s.push_back(state_of(names_[i] + ":adamw.m", kAdamFirst, i, m_[i], shard_));
  for (size_t i = 0; i < v_.size(); ++i) s.push_back(state_of(names_[i] + ":adamw.v", kAdamSecond, i, v_[i], shard_));
  return s;
}

MuonGroup muon_group(const model::Param& p, const model::ModelConfig& mc) {
  if (p.name == "tok_embeddings.weight") return {ParamGroup::kEmbedding, {}};
  if (p.name == "output.weight") return {ParamGroup::kHead, {}};
  if (p.name == "resid_lambdas") return {ParamGroup::kResidLambdas, {}};
  if (p.name == "x0_lambdas") return {ParamGroup::kX0Lambdas, {}};
  const int64_t rows = p.value.rows;
  if (p.name.rfind("layers.", 0) != 0 || rows < 2 || p.value.cols < 2) return {ParamGroup::kScalar, {}};
  if (ends_with(p.name, "attention.wqkv.weight")) {
    // q (d_model rows: n_heads heads) | k | v (the rest, halved: n_kv_heads heads each).
    const int64_t q = mc.d_model, kv = (rows - q) / 2;
    if (kv < 1 || q + 2 * kv != rows)
      throw Error("muon: '" + p.name + "' has " + std::to_string(rows) + " rows, not d_model " + std::to_string(q) +
                  " (q) plus two equal k and v parts");
    return {ParamGroup::kMatrix, {q, kv, kv}};
  }
  if (ends_with(p.name, "feed_forward.w12.weight") && rows == 2 * mc.d_ff)
    return {ParamGroup::kMatrix, {mc.d_ff, mc.d_ff}};  // SwiGLU gate | up
  return {ParamGroup::kMatrix, {rows}};
}

Muon::Muon(model::Backend& backend, const std::vector<model::Param>& params, const model::ModelConfig& mc, Shard shard)
    : Optimizer(std::move(shard)), backend_(backend), mc_(mc), names_(names_of(params)) {
  for (size_t i = 0; i < params.size(); ++i) {
    const model::Tensor& p = params[i].value;
    groups_.push_back(muon_group(params[i], mc));
    const MuonGroup& g = groups_.back();
    first_.push_back(state_tensor(backend, shard_, i, p.rows, p.cols));
    second_.push_back(g.group == ParamGroup::kMatrix
                          ? state_tensor(backend, shard_, i, 1, model::muon_second_moment_size(g.blocks, p.cols))
                          : state_tensor(backend, shard_, i, p.rows, p.cols));
  }
}

model::MuonHyper Muon::hyper(const TrainConfig& c, double lr_mult, int64_t t) {
  const double step = static_cast<double>(t - 1);  // nanochat's 0-based iteration
  const double warm = c.muon_momentum_warmup > 0 ? std::min(step / static_cast<double>(c.muon_momentum_warmup), 1.0) : 1.0;
  model::MuonHyper h;
  h.lr = c.matrix_lr * lr_mult;
  h.momentum = (1 - warm) * c.muon_momentum_start + warm * c.muon_momentum;
  h.beta2 = c.muon_beta2;
  h.weight_decay = c.muon_weight_decay * (1 - step / static_cast<double>(c.steps));
  if (!model::muon_ortho_from_name(c.muon_ns, &h.ortho)) throw Error("train.muon_ns: unknown '" + c.muon_ns + "'");
  return h;
}

double Muon::adamw_lr(const TrainConfig& c, ParamGroup group, const model::ModelConfig& mc) {
  // nanochat tuned the embedding and head rates at width 768 and scales them by 1/sqrt(width).
  const double width = std::pow(static_cast<double>(mc.d_model) / 768.0, -0.5);
  switch (group) {
    case ParamGroup::kEmbedding: return c.embedding_lr * width;
    case ParamGroup::kHead: return c.head_lr * width;
    // nanochat: they accumulate over every layer of the residual stream, so they move slowly.
    case ParamGroup::kResidLambdas: return c.scalar_lr * 0.01;
    default: return c.scalar_lr;
  }
}

std::pair<double, double> Muon::adamw_betas(const TrainConfig& c, ParamGroup group) {
  if (group == ParamGroup::kX0Lambdas) return {0.96, 0.95};  // nanochat's higher beta1 for the x0 lambdas
  return {c.beta1, c.beta2};
}

void Muon::step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr,
                const TrainConfig& c, int64_t t, float grad_scale) {
  const double mult = lr / c.lr;  // the schedule's multiplier, applied to every group
  model::MuonHyper h = hyper(c, mult, t);
  h.grad_scale = grad_scale;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!shard_.holds(i)) continue;
    if (groups_[i].group == ParamGroup::kMatrix) {
      backend_.muon(params[i].value, grads[i], first_[i], second_[i], groups_[i].blocks, h);
    } else {
      // nanochat gives its AdamW groups no weight decay.
      const auto [beta1, beta2] = adamw_betas(c, groups_[i].group);
      const model::AdamWHyper a{adamw_lr(c, groups_[i].group, mc_) * mult, beta1, beta2, c.eps, 0.0, t, grad_scale};
      backend_.adamw(params[i].value, grads[i], first_[i], second_[i], a, false);
    }
  }
}

std::vector<OptimizerState> Muon::state() {
  std::vector<OptimizerState> s;
  for (size_t i = 0; i < first_.size(); ++i) {
    const bool muon = groups_[i].group == ParamGroup::kMatrix;
    s.push_back(state_of(names_[i] + (muon ? ":muon.momentum" : ":adamw.m"), muon ? "Muon's momentum" : kAdamFirst, i,
                         first_[i], shard_));
  }
  for (size_t i = 0; i < second_.size(); ++i) {
    const bool muon = groups_[i].group == ParamGroup::kMatrix;
    s.push_back(state_of(names_[i] + (muon ? ":muon.second_moment" : ":adamw.v"),
                         muon ? "Muon's second moment" : kAdamSecond, i, second_[i], shard_));
  }
  return s;
}

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c, model::Backend& backend,
                                          const std::vector<model::Param>& params, const model::ModelConfig& mc,
                                          Shard shard) {
  if (c.optimizer == "adamw") return std::make_unique<AdamW>(backend, params, std::move(shard));
  if (c.optimizer == "muon") return std::make_unique<Muon>(backend, params, mc, std::move(shard));
  throw Error("train.optimizer must be 'adamw' or 'muon', got '" + c.optimizer + "'");
}

uint64_t state_floats(const TrainConfig& c, const model::Param& p, const model::ModelConfig& mc) {
  const uint64_t n = static_cast<uint64_t>(p.value.size());
  const MuonGroup g = c.optimizer == "muon" ? muon_group(p, mc) : MuonGroup{ParamGroup::kScalar, {}};
  if (g.group != ParamGroup::kMatrix) return 2 * n;  // AdamW's two moments
  return n + static_cast<uint64_t>(model::muon_second_moment_size(g.blocks, p.value.cols));
}

Shard make_shard(const TrainConfig& c, const std::vector<model::Param>& params, const model::ModelConfig& mc, int rank,
                 int world) {
  if (c.zero == 0) return {};
  std::vector<uint64_t> sizes;
  for (const model::Param& p : params) sizes.push_back(state_floats(c, p, mc));
  return {balance_owners(sizes, world), rank};
}

std::vector<double> grad_squares(model::Backend& backend, const std::vector<model::Tensor>& grads, const Shard& shard,
                                 const std::string& what) {
  std::vector<const model::Tensor*> held;
  for (size_t i = 0; i < grads.size(); ++i)
    if (shard.holds(i)) held.push_back(&grads[i]);
  const std::vector<double> sums = backend.sum_squares(held);  // one read back for all
  std::vector<double> squares(grads.size(), 0.0);
  for (size_t i = 0, k = 0; i < grads.size(); ++i)
    if (shard.holds(i)) squares[i] = sums[k++];
  if (shard.sharded()) backend.collectives().allreduce_sum(squares, what);
  return squares;
}

double norm_of_squares(const std::vector<double>& squares) {
  double s = 0;
  for (const double x : squares) s += x;
  return std::sqrt(s);
}

double grad_norm(model::Backend& backend, const std::vector<model::Tensor>& grads, const Shard& shard,
                 const std::string& what) {
  return norm_of_squares(grad_squares(backend, grads, shard, what));
}

float clip_scale(double clip, double norm) { return clip > 0 && norm > clip ? static_cast<float>(clip / norm) : 1.0f; }

}  // namespace q2::train
