#include "train/memory_plan.h"

#include <gtest/gtest.h>

#include "common/error_test_util.h"
#include "common/memory.h"
#include "gemm/workspace.h"
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
    // The block inputs (BF16) plus the last block's output, the embedding's output before its
    // norm, the final norm's output and both norms' rstd.
    const uint64_t tokens = 4 * 2048, d = 1280;
    EXPECT_EQ(again.activations, tokens * d * 2 * 20 + tokens * d * 2 * 3 + tokens * 4 * 2);
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

// A block keeps (BF16 on the GPU): its input and the lambdas' mix of it, qkv, attention's
// output, the mid-block residual and the MLP's input-side output, the rstds and log-sum-exp in
// float32, and through its BF16 linears' references the two norm outputs and the MLP's
// activation, with the linears' BF16 copies of W. Outside the blocks: the last block's output
// (the final norm's input), the final norm's output and rstd, and with the embedding norm the
// embedding's output and rstd.
TEST(MemoryPlan, ActivationsAreWhatEachBlockKeeps) {
  TrainConfig c;
  c.scheme = "bf16";
  c.seq_len = 256;
  c.batch_size = 2;
  const uint64_t T = 512;
  {
    const model::ModelConfig mc = model::preset("nanochat-d20", 1024, 256);  // lambdas, embed norm, QK norm, ReLU^2
    const uint64_t d = 1280, H = 10, L = 20;
    const uint64_t block = T * 2 * (d + d + 3 * d + d + d + 4 * d) + T * 4 * 2 + T * H * 4 + T * 2 * H * 4 +
                           T * 2 * (d + d + 4 * d) + 2 * (3 * d * d + d * d + 4 * d * d + d * 4 * d);
    EXPECT_EQ(plan_memory(mc, c, "cuda").activations, T * 2 * d * 3 + T * 4 * 2 + L * block);
  }
  {
    const model::ModelConfig mc = model::preset("tiny", 1024, 256);  // Llama: gains, SwiGLU, stream in place
    const uint64_t d = 256, ff = 768, H = 4, L = 4;
    const uint64_t block = T * 2 * (d + 3 * d + d + d + 2 * ff) + T * 4 * 2 + T * H * 4 + T * 2 * (d + d + ff) +
                           2 * (3 * d * d + d * d + 2 * ff * d + d * ff);
    EXPECT_EQ(plan_memory(mc, c, "cuda").activations, T * 2 * d * 2 + T * 4 + L * block);
  }
}

// The transient is the largest of: the logits with their gradient; the logits beside the BF16
// copy of the LM head (the CUDA backend's head GEMMs), and at the start of backward the logits'
// gradient, dxf and that copy; a block's backward, which holds the logits' gradient, dxf, dx,
// dx0 and all six of the block's gradients (under recompute also the block made again, less
// the stream it mixes).
TEST(MemoryPlan, TransientIsTheLogitsTheHeadCopyOrABlocksBackward) {
  const uint64_t d = 1280, qkv = 3 * d, ff = 4 * d, L = 20;
  TrainConfig c;
  c.scheme = "bf16";
  c.batch_size = 1;
  {
    c.seq_len = 64;  // few tokens: the head's copy (160 MiB) outgrows the logits
    const uint64_t T = 64, V = 65536, logits = T * V * 2;
    const model::ModelConfig mc = model::preset("nanochat-d20", V, 64);
    EXPECT_EQ(plan_memory(mc, c, "cuda").working, logits + T * 2 * d + V * d * 2);
    EXPECT_EQ(plan_memory(mc, c, "cpu").working, 2 * T * V * 4);  // no copy on the CPU
  }
  c.seq_len = 2048;  // a small vocabulary: a block's backward is the largest
  const uint64_t T = 2048, V = 512, logits = T * V * 2;
  const model::ModelConfig mc = model::preset("nanochat-d20", V, 2048);
  const uint64_t grads = T * 2 * (3 * d + ff + ff + d + d + qkv + d);
  EXPECT_EQ(plan_memory(mc, c, "cuda").working, logits + grads);
  c.recompute = true;
  const MemoryPlan again = plan_memory(mc, c, "cuda");
  c.recompute = false;
  const MemoryPlan kept = plan_memory(mc, c, "cuda");
  // Every block is alike here: the largest block is the kept blocks' share, less the streams the blocks mix.
  const uint64_t outer = T * 2 * d * 3 + T * 4 * 2, block = (kept.activations - outer) / L;
  EXPECT_EQ(again.working, logits + grads + block - T * 2 * d);
}

// On the GPU, the backend's buffers: the cuBLASLt workspace, and the linear layers' scratch as
// shared by all layers. quartet2: an NVFP4 tensor per backward operand and shape (dY and dY^T
// at each output width, W^T of each linear, X^T at each input width), one BF16 expansion per
// slot at its largest (the forward's X or dY, W, dY^T, X^T), and per stream MS-EDEN's float32
// scales, one per 16 values; a forward keeping nothing adds the NVFP4 X of each input width
// and W of each linear. bf16: only its W's BF16 copy in such a forward.
TEST(MemoryPlan, CudaBuffersAreTheGemmWorkspaceAndTheLayersScratch) {
  const model::ModelConfig mc = model::preset("nanochat-d20", 1024, 2048);
  const int64_t T = 2048, d = 1280, qkv = 3 * d, ff = 4 * d;
  auto nv = [](int64_t r, int64_t c) {  // packed codes, scales padded to 128 x 4, the tensor scale
    return static_cast<uint64_t>(r * c / 2 + (r + 127) / 128 * 128 * ((c / 16 + 3) / 4 * 4) + 4);
  };
  const uint64_t ws = gemm::kCublasLtWorkspaceBytes;
  TrainConfig c;
  c.seq_len = 2048;
  c.batch_size = 1;
  c.scheme = "bf16";
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws);
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, true).buffers, ws + 2 * ff * d);
  EXPECT_EQ(plan_memory(mc, c, "cpu").buffers, 0u);
  c.recompute = true;
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws + 2 * ff * d);

  c.recompute = false;
  c.scheme = "quartet2";
  const uint64_t fp4 = nv(T, qkv) + nv(T, d) + nv(T, ff) +                           // dY
                       nv(d, qkv) + nv(d, d) + nv(d, ff) + nv(ff, d) +                 // W^T
                       nv(qkv, T) + nv(d, T) + nv(ff, T) + nv(d, T) + nv(ff, T);       // dY^T, X^T
  const uint64_t expansions = 2 * (T * ff + ff * d + T * ff + T * ff), scales = 4 * (T * ff / 16 + T * ff / 16);
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws + fp4 + expansions + scales);
  const uint64_t forward = nv(T, d) + nv(T, ff) + nv(qkv, d) + nv(d, d) + nv(ff, d) + nv(d, ff);
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, true).buffers, ws + fp4 + expansions + scales + forward);
  c.recompute = true;
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws + fp4 + expansions + scales + forward);
  c.recompute = false;
  c.gemm = "native";  // FP4 tensor cores take every product: no expansions
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws + fp4 + scales);
  c.gemm = "auto";
  c.outlier_split = 0.9;  // wgrad's rests of dY (the largest) and of X_q (per shape), and the two lists
  const uint64_t split = 2 * T * ff + nv(T, d) + nv(T, ff) + 4 * (2 * ff * (T / 128) + 2 * ff);
  EXPECT_EQ(plan_memory(mc, c, "cuda", 1, false).buffers, ws + fp4 + expansions + scales + split);
  EXPECT_NE(describe(plan_memory(mc, c, "cuda"), 0).find("backend buffers (GEMM workspace, layer scratch)"),
            std::string::npos);
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
