#include "train/memory_plan.h"

#include <gtest/gtest.h>

#include "common/error_test_util.h"
#include "common/memory.h"
#include "model/transformer.h"
#include "train/optimizer.h"

namespace q2::train {
namespace {

model::ModelConfig nanochat_small() {
  model::ModelConfig mc = model::preset("nanochat-d20", 512, 128);
  mc.n_layers = 2;
  return mc;
}

// The fixed parts are what the model and the optimizer really allocate: counted here from the
// tensors a CPU model and each optimizer hold.
TEST(MemoryPlan, FixedPartsAreWhatTheModelAndOptimizerAllocate) {
  const auto backend = model::make_cpu_backend();
  for (const model::ModelConfig& mc : {nanochat_small(), model::preset("tiny", 300, 64)}) {
    model::Transformer model(mc, linear::scheme_by_name("quartet2"), *backend);
    uint64_t params = 0;
    for (const model::Param& p : model.params()) params += 4 * static_cast<uint64_t>(p.value.size());
    for (const char* name : {"adamw", "muon"}) {
      SCOPED_TRACE(mc.preset + " " + name);
      TrainConfig c;
      c.optimizer = name;
      c.seq_len = 64;
      const auto opt = make_optimizer(c, *backend, model.params(), mc);
      uint64_t state = 0;
      for (const OptimizerState& s : opt->state()) state += 4 * static_cast<uint64_t>(s.tensor->size());
      const MemoryPlan plan = plan_memory(mc, c, "cuda");
      EXPECT_EQ(plan.parameters, params);
      EXPECT_EQ(plan.gradients, params);
      EXPECT_EQ(plan.optimizer, state);
    }
  }
}

// Recomputation keeps one residual-stream row per block and token instead of the block's
// activations, and the micro-batch scales what is kept and the transient, not the fixed parts.
TEST(MemoryPlan, RecomputeAndMicroBatchMoveOnlyTheActivations) {
  const model::ModelConfig mc = model::preset("nanochat-d20", 65536, 2048);
  TrainConfig c;
  c.seq_len = 2048;
  c.batch_size = 4;
  for (const char* scheme : {"bf16", "quartet2"}) {
    SCOPED_TRACE(scheme);
    c.scheme = scheme;
    c.recompute = false;
    const MemoryPlan kept = plan_memory(mc, c, "cuda");
    c.recompute = true;
    const MemoryPlan again = plan_memory(mc, c, "cuda");
    EXPECT_EQ(kept.parameters + kept.gradients + kept.optimizer, again.parameters + again.gradients + again.optimizer);
    // The block inputs (BF16) plus the embedding and final-norm tensors.
    const uint64_t tokens = 4 * 2048, d = 1280;
    EXPECT_EQ(again.activations, tokens * d * 2 * 20 + tokens * d * 2 * 4 + tokens * 4 * 2);
    EXPECT_GT(kept.activations, 5 * again.activations);
    // Affine in the micro-batch: the block linears' copies of W stay, the rest scales.
    c.recompute = false;
    c.batch_size = 8;
    const MemoryPlan twice = plan_memory(mc, c, "cuda");
    c.batch_size = 12;
    const MemoryPlan thrice = plan_memory(mc, c, "cuda");
    EXPECT_EQ(thrice.activations - twice.activations, twice.activations - kept.activations);
    EXPECT_LT(twice.activations, 2 * kept.activations);
    EXPECT_GT(twice.working, kept.working);
    c.batch_size = 4;
  }
  // NVFP4 copies of X and W instead of BF16 ones (the blocks' other activations are BF16 either way).
  c.scheme = "bf16";
  const uint64_t bf16 = plan_memory(mc, c, "cuda").activations;
  c.scheme = "quartet2";
  EXPECT_LT(plan_memory(mc, c, "cuda").activations, bf16);
}

// A configuration over the free memory is refused naming the estimate, the free memory and
// configurations that fit; each suggestion does fit, and keeps the tokens per step.
TEST(MemoryPlan, TooBigIsRefusedWithConfigurationsThatFit) {
  const model::ModelConfig mc = model::preset("nanochat-d20", 65536, 2048);
  TrainConfig c;
  c.seq_len = 2048;
  c.batch_size = 32;
  c.grad_accum = 2;
  const MemoryPlan p = plan_memory(mc, c, "cuda");
  EXPECT_NO_THROW(check_fits(p, p.peak(), mc, c));
  EXPECT_NO_THROW(check_fits(p, 0, mc, c));  // unknown free memory: no refusal
  TrainConfig half = c;
  half.batch_size = 8;
  const uint64_t free = plan_memory(mc, half, "cuda").peak();
  const std::string e = test::error_of([&] { check_fits(p, free, mc, c); });
  EXPECT_NE(e.find("predicted peak is " + format_bytes(p.peak())), std::string::npos) << e;
  EXPECT_NE(e.find(format_bytes(free) + " is free on the device"), std::string::npos) << e;
  EXPECT_NE(e.find("train.batch_size = 8 with train.grad_accum = 8 (predicted"), std::string::npos) << e;
  // With recompute a larger micro-batch fits: suggested, and it does fit.
  const auto at = e.find("and train.recompute = true");
  ASSERT_NE(at, std::string::npos) << e;
  const auto b = e.rfind("train.batch_size = ", at);
  TrainConfig r = c;
  r.recompute = true;
  r.batch_size = std::stoll(e.substr(b + 19));
  EXPECT_GT(r.batch_size, 8) << e;
  EXPECT_EQ(c.batch_size % r.batch_size, 0) << e;
  EXPECT_LE(plan_memory(mc, r, "cuda").peak(), free);
  // Nothing fits: said so.
  EXPECT_NE(test::error_of([&] { check_fits(p, p.parameters, mc, c); }).find("no smaller micro-batch fits"),
            std::string::npos);
}

// Per GPU, ZeRO-1 keeps the largest rank's shard of the optimizer state: what the sharded
// optimizers allocate, and printed beside the peak without it.
TEST(MemoryPlan, ZeroOneCountsTheLargestShardPerRank) {
  const auto backend = model::make_cpu_backend();
  for (const char* optimizer : {"adamw", "muon"}) {
    SCOPED_TRACE(optimizer);
    TrainConfig c;
    c.optimizer = optimizer;
    c.seq_len = 64;
    c.zero = 1;
    const model::ModelConfig mc = nanochat_small();
    model::Transformer m(mc, linear::scheme_by_name(c.scheme), *backend);
    for (int world : {1, 2, 4}) {
      uint64_t largest = 0;
      for (int r = 0; r < world; ++r) {
        const auto opt = make_optimizer(c, *backend, m.params(), mc, make_shard(c, m.params(), mc, r, world));
        uint64_t bytes = 0;
        for (const OptimizerState& s : opt->state())
          if (s.tensor) bytes += 4 * static_cast<uint64_t>(s.tensor->size());
        largest = std::max(largest, bytes);
      }
      TrainConfig off = c;
      off.zero = 0;
      const MemoryPlan with = plan_memory(mc, c, "cuda", world), without = plan_memory(mc, off, "cuda", world);
      EXPECT_EQ(with.optimizer, largest);
      EXPECT_EQ(with.optimizer_shard, largest);
      EXPECT_EQ(without.optimizer, without.optimizer_whole);
      EXPECT_EQ(without.peak() - with.peak(), without.optimizer_whole - largest);
      if (world == 1) {
        EXPECT_EQ(with.peak(), without.peak());
        continue;
      }
      EXPECT_LT(with.peak(), without.peak());
      const std::string shown = describe(with, 0), other = describe(without, 0);
      EXPECT_NE(shown.find("per rank of " + std::to_string(world) + " with ZeRO-1"), std::string::npos) << shown;
      EXPECT_NE(shown.find("optimizer state (ZeRO-1: the largest shard)"), std::string::npos) << shown;
      EXPECT_NE(shown.find("predicted peak without ZeRO-1 (dist.zero = 0)"), std::string::npos) << shown;
      EXPECT_NE(shown.find(format_bytes(without.peak())), std::string::npos) << shown;
      EXPECT_NE(other.find("predicted peak with ZeRO-1 (dist.zero = 1)"), std::string::npos) << other;
    }
  }
}

}  // namespace
}  // namespace q2::train
