#pragma once
// The memory a training run needs, predicted from its configuration before anything is
// allocated: the trainer prints it before the first step and refuses a configuration that
// cannot fit, naming what would (docs/ARCHITECTURE.md, "Memory").
#include <cstdint>
#include <string>

#include "model/config.h"
#include "train/config.h"

namespace q2::train {

// Bytes per rank (per GPU), by what holds them.
struct MemoryPlan {
  std::string device;  // "cpu" (float32 activations) or "cuda" (BF16 activations)
  int64_t micro_batch = 0, seq = 0;
  bool recompute = false;
  int64_t world = 1;         // data-parallel ranks
  bool zero = false;         // dist.zero = 1
  uint64_t parameters = 0;   // float32 master weights
  uint64_t gradients = 0;    // float32
  uint64_t optimizer = 0;    // AdamW's two moments; Muon's momentum and factored second moments:
                             // optimizer_whole, or under ZeRO-1 optimizer_shard
  uint64_t optimizer_whole = 0;  // every parameter's (dist.zero = 0)
  uint64_t optimizer_shard = 0;  // the largest rank's shard of it over `world` ranks (dist.zero = 1)
  uint64_t activations = 0;  // what one micro-batch's forward keeps for backward, the block
                             // linears' copies of W (BF16 or NVFP4) included
  uint64_t buffers = 0;      // the backend's buffers kept from step to step (CUDA: the cuBLASLt
                             // workspace, the linear layers' shared operand scratch)
  uint64_t working = 0;      // the largest transient on top (the logits and their gradient, the
                             // LM head's BF16 copy, or one block's backward)
  bool evaluates = true;     // buffers count what evaluation's forward (keeping nothing) leaves
  uint64_t peak() const { return parameters + gradients + optimizer + activations + buffers + working; }
};

// The plan of training `mc` with c's scheme, optimizer, train.batch_size, train.recompute and
// dist.zero on `device` ("cpu" or "cuda"; c.gemm = "native" skips the BF16 expansions of NVFP4
// operands), per rank of `world`. `evaluates`: the run also evaluates (the trainer does, bench
// step does not), whose forward leaves its operands in the CUDA layers' scratch.
MemoryPlan plan_memory(const model::ModelConfig& mc, const TrainConfig& c, const std::string& device,
                       int64_t world = 1, bool evaluates = true);

// The plan as log lines, against the memory free now (0: unknown, left out); over several ranks
// also the peak under the other dist.zero setting.
std::string describe(const MemoryPlan& plan, uint64_t free_bytes);

// Throws an Error when plan.peak() exceeds free_bytes, naming the estimate, the free memory and
// the configurations that would fit: train.recompute, and the largest train.batch_size with the
// train.grad_accum that keeps the tokens per step.
void check_fits(const MemoryPlan& plan, uint64_t free_bytes, const model::ModelConfig& mc, const TrainConfig& c);

}  // namespace q2::train
