#pragma once
// Training configuration: typed defaults, overridden by a TOML file, overridden by
// --key=value flags (dotted keys, e.g. --train.lr=3e-4). The resolved config is printed at
// start and stored in every checkpoint.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/linear_schemes.h"

namespace q2::train {

struct TrainConfig {
  // model
  std::string preset = "tiny";
  int64_t seq_len = 256;  // load_config: the preset's own (model::preset_seq_len) unless given
  // model.depth, model.n_layers, ... model.init: each, when given, overrides the preset's
  // (model::ModelOverrides); unset keys are left out of the JSON form.
  model::ModelOverrides model;
  // data and output
  std::string data_dir = "data/gcide";
  std::string out_dir = "runs/default";
  // method and device
  std::string scheme = "quartet2";
  int hadamard = 0;  // 0: the scheme's own rotation size
  // > 0: MS-EDEN rounds chunks whose outlier share exceeds it stochastically (quant/ms_eden.h)
  double eden_fallback = 0;
  // 2: the backward's rotated operands are rotated twice (linear::Scheme::hadamard_rounds)
  int hadamard_rounds = 1;
  // > 0: wgrad's outlier split (linear::Scheme::outlier_split); 0: off
  double outlier_split = 0;
  std::string device = "cpu";
  std::string gemm = "auto";  // NVFP4 products: auto | emulated | native (model::BackendOptions)
  // method.bf16_first_layers, method.bf16_last_layers, method.bf16_linears: block linears kept in
  // BF16 whatever the scheme (model/linear_schemes.h); none by default.
  model::PrecisionOverrides precision;
  // optimization
  int64_t batch_size = 8, grad_accum = 1, steps = 1000;
  // Activation recomputation (model::Transformer::set_recompute): keep only each block's input
  // and run its forward again in backward; bit-identical gradients for less memory.
  bool recompute = false;
  double lr = 1e-3, min_lr_ratio = 0.1, warmup_frac = 0.1;
  std::string schedule = "cosine";  // cosine | wsd
  double decay_frac = 0.2;          // wsd: the final fraction of steps that decays
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  // The loss-spike guard (train/spike_guard.h): > 0 skips the update of a step whose gradient
  // norm (before clipping) exceeds spike_guard times the median of the last spike_window steps'
  // norms; 0 turns it off.
  double spike_guard = 0;
  int64_t spike_window = 50;
  // The optimizer (train/optimizer.h): "adamw" (every parameter, at lr, weight_decay on block
  // weights) or "muon" (nanochat's groups: Muon for the block matrices, AdamW for the rest,
  // each group at its own base rate times the schedule's lr / train.lr).
  std::string optimizer = "adamw";
  // optimizer = "muon": the groups' base learning rates, nanochat's defaults. The embedding's and
  // the head's are scaled by (d_model / 768)^-0.5, each Muon matrix's by sqrt(max(1, rows / cols)).
  double matrix_lr = 0.02, embedding_lr = 0.3, head_lr = 0.004;
  // AdamW on the other parameters (the RMSNorm gains): nanochat's rate for its scalars (it has
  // no norm gains); on the tiny preset it beats 0.004 (docs/ARCHITECTURE.md).
  double scalar_lr = 0.5;
  // Muon's momentum rises linearly from muon_momentum_start to muon_momentum over the first
  // muon_momentum_warmup steps; its cautious weight decay falls linearly from
  // muon_weight_decay to 0 over the run; muon_beta2 averages the factored second moments;
  // muon_ns picks the orthogonalizing iteration ("quintic" or "polar_express", model/muon.h).
  double muon_momentum = 0.95, muon_momentum_start = 0.85;
  int64_t muon_momentum_warmup = 300;
  double muon_beta2 = 0.95, muon_weight_decay = 0.2;
  std::string muon_ns = "quintic";
  uint64_t seed = 0;
  int64_t stop_at = 0;  // > 0: stop after this step with a checkpoint, to be continued with --resume
  // monitoring
  int64_t log_every = 10, eval_every = 100, eval_batches = 8, ckpt_every = 100;
  // > 0: every dump_every steps, the X, W and dY of the block linears (first micro-batch) go to
  // out.dir/tensors/step<N>/<linear>/{x,w,dy}.npy (grad-error --load reads them); dump_layers
  // picks whose: "ends" the first and last layer's, "all" every layer's (a bias study per layer).
  int64_t dump_every = 0;
  std::string dump_layers = "ends";
  int64_t dump_rows = 0;  // > 0: only the first dump_rows tokens of X and dY (W whole); 0: all
  // Each step's metrics record also holds every parameter's gradient norm ("param_grad_norms"),
  // to find which layer and tensor a spike starts in.
  bool param_grad_norms = false;
  // data parallelism (docs/ARCHITECTURE.md); 0 / -1 / "": taken from OpenMPI's environment or
  // world 1 by resolve_dist
  int64_t world_size = 0, rank = -1;
  int64_t local_rank = -1;   // picks the GPU; -1: the rank (one host)
  std::string rendezvous;    // shared directory of the NCCL id; required when world_size > 1
  double dist_timeout_s = 120;  // start-up and every collective wait at most this long
  // MiB of gradients per all-reduce (or reduce-scatter) bucket, started while backward runs; 0:
  // one collective of all gradients after backward (no overlap)
  double bucket_mb = 25;
  // 1: ZeRO-1 (train/zero.h), each rank keeps the optimizer state of its shard of the
  // parameters only; 0: every rank keeps all of it
  int64_t zero = 0;
};

nlohmann::json to_json(const TrainConfig& c);
TrainConfig from_json(const nlohmann::json& j);
// The model the config describes, for a vocabulary (which comes with the data).
model::ModelConfig model_config(const TrainConfig& c, int64_t vocab);
// The scheme the method section describes: method.scheme under method.hadamard,
// method.eden_fallback, method.hadamard_rounds and method.outlier_split (before the precision overrides, model::linear_schemes).
linear::Scheme method_scheme(const TrainConfig& c);

// Defaults <- TOML file (if not empty) <- overrides ("section.key=value"). Unknown keys, bad
// types and bad values are errors naming the key.
TrainConfig load_config(const std::string& toml_path, const std::vector<std::string>& overrides);
// One override, "--section.key=value" (dashes optional), as its key and its value typed the way
// load_config reads it (an integer, else a number, else the text). Throws without a '='.
std::pair<std::string, nlohmann::json> parse_override(const std::string& o);
void validate(const TrainConfig& c);

// Fills the data-parallel fields left unset: world size, rank and local rank from
// OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK} (read through `env`, std::getenv in the program), the
// rendezvous directory then defaulting to out.dir/rendezvous; without them world 1, rank 0.
// Validates the result (rank < world, a rendezvous directory when world > 1).
void resolve_dist(TrainConfig& c, const std::function<const char*(const char*)>& env);

}  // namespace q2::train
