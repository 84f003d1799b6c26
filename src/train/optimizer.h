#pragma once
// Learning-rate schedules and the optimizers over float32 master weights: AdamW with decoupled
// weight decay, and Muon with AdamW as nanochat pairs them (train.optimizer).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/transformer.h"
#include "train/config.h"
#include "train/zero.h"

namespace q2::train {

// cosine: over the warmup, a cosine rise from lr/100 to lr, then a cosine fall to
// lr * min_lr_ratio (the paper's OneCycle schedule). wsd: the same warmup, constant lr, then
// a linear fall to lr * min_lr_ratio over the last decay_frac of the steps.
double learning_rate(const TrainConfig& c, int64_t step);

// An optimizer's state: tensors the backend owns, in the order checkpoints store them.
struct OptimizerState {
  std::string name;  // "<parameter name>:<kind>", e.g. "output.weight:adamw.m"
  std::string what;  // for messages: "AdamW's first moment"
  size_t param;      // index into the parameters
  int64_t rows, cols;
  model::Tensor* tensor;  // null where another rank's shard holds it (ZeRO-1)
};

// The optimizers update the parameters of their shard only, and keep state for those only.
class Optimizer {
 public:
  explicit Optimizer(Shard shard) : shard_(std::move(shard)) {}
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;  // the train.optimizer value
  // One update of the shard's parameters; `lr` is the schedule's learning rate (learning_rate),
  // `t` counts updates from 1, every gradient is read times `grad_scale` (clipping).
  virtual void step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr,
                    const TrainConfig& c, int64_t t, float grad_scale) = 0;
  // Every parameter's, this rank's or not.
  virtual std::vector<OptimizerState> state() = 0;
  // The learning rate the logs show for the schedule's `lr`.
  virtual double shown_lr(double lr, const TrainConfig& /*c*/) const { return lr; }
  const Shard& shard() const { return shard_; }

 protected:
  Shard shard_;
};

class AdamW final : public Optimizer {
 public:
  AdamW(model::Backend& backend, const std::vector<model::Param>& params, Shard shard = {});
  std::string name() const override { return "adamw"; }
  void step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr, const TrainConfig& c,
            int64_t t, float grad_scale) override;
  std::vector<OptimizerState> state() override;
  std::vector<model::Tensor>& m() { return m_; }
  std::vector<model::Tensor>& v() { return v_; }

 private:
  model::Backend& backend_;
  std::vector<std::string> names_;
  std::vector<model::Tensor> m_, v_;
};

// How optimizer = "muon" treats a parameter (nanochat's setup_optimizers).
enum class ParamGroup { kMatrix, kEmbedding, kHead, kScalar, kResidLambdas, kX0Lambdas };
struct MuonGroup {
  ParamGroup group;
  // kMatrix: the row counts of the logical matrices stacked in the tensor (the fused q | k | v,
  // the fused SwiGLU gate | up), each orthogonalized on its own as nanochat's separate ones are.
  std::vector<int64_t> blocks;
};
// The 2-D weights of the blocks ("layers.*") go to Muon; the token embedding and the LM head to
// AdamW at their own rates; the resid lambdas to AdamW at train.scalar_lr / 100 and the x0
// lambdas at train.scalar_lr with betas (0.96, 0.95), as nanochat; everything else (RMSNorm
// gains) to AdamW at train.scalar_lr.
MuonGroup muon_group(const model::Param& p, const model::ModelConfig& mc);

// Muon for the block matrices and AdamW for the rest (muon_group), with nanochat's rates,
// schedules and cautious weight decay (docs/ARCHITECTURE.md, model/muon.h).
class Muon final : public Optimizer {
 public:
  Muon(model::Backend& backend, const std::vector<model::Param>& params, const model::ModelConfig& mc,
       Shard shard = {});
  std::string name() const override { return "muon"; }
  void step(std::vector<model::Param>& params, const std::vector<model::Tensor>& grads, double lr, const TrainConfig& c,
            int64_t t, float grad_scale) override;
  std::vector<OptimizerState> state() override;
  double shown_lr(double lr, const TrainConfig& c) const override { return c.matrix_lr * (lr / c.lr); }
  const std::vector<MuonGroup>& groups() const { return groups_; }

  // The Muon hyper-parameters of update t (from 1): momentum warmup and weight-decay decay.
  static model::MuonHyper hyper(const TrainConfig& c, double lr_mult, int64_t t);
  // The AdamW base learning rate and betas of a parameter of `group` (not kMatrix).
  static double adamw_lr(const TrainConfig& c, ParamGroup group, const model::ModelConfig& mc);
  static std::pair<double, double> adamw_betas(const TrainConfig& c, ParamGroup group);

 private:
  model::Backend& backend_;
  model::ModelConfig mc_;
  std::vector<std::string> names_;
  std::vector<MuonGroup> groups_;
  // Per parameter: Muon's momentum [R, C] and second moments [1, n]; AdamW's m and v.
  std::vector<model::Tensor> first_, second_;
};

// The optimizer c.optimizer names, over `params` of a model of config `mc`, for `shard`.
std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c, model::Backend& backend,
                                          const std::vector<model::Param>& params, const model::ModelConfig& mc,
                                          Shard shard = {});

// The float32 values of c.optimizer's state for parameter p.
uint64_t state_floats(const TrainConfig& c, const model::Param& p, const model::ModelConfig& mc);
// Rank `rank`'s shard under c.zero: with 1, the parameters balanced over `world` ranks by the
// size of their optimizer state.
Shard make_shard(const TrainConfig& c, const std::vector<model::Param>& params, const model::ModelConfig& mc, int rank,
                 int world);

// Global L2 norm of the gradients: float64 squares per parameter, added in parameter order
// (deterministic). Sharded, each rank holds the sums of its own parameters' gradients only: the
// squares are all-reduced, each nonzero on one rank only, so the norm is bit for bit the
// unsharded one. `what` names it in errors.
double grad_norm(model::Backend& backend, const std::vector<model::Tensor>& grads, const Shard& shard = {},
                 const std::string& what = "gradient norm");
// Those squares, one per gradient (every rank has them all), and the norm they make (their
// sum in parameter order, rooted): grad_norm is norm_of_squares(grad_squares(...)).
std::vector<double> grad_squares(model::Backend& backend, const std::vector<model::Tensor>& grads,
                                 const Shard& shard = {}, const std::string& what = "gradient norm");
double norm_of_squares(const std::vector<double>& squares);
// The factor train.clip scales gradients of norm `norm` by: clip / norm above the clip, else 1.
float clip_scale(double clip, double norm);

}  // namespace q2::train
