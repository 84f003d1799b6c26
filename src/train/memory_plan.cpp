#include "train/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <tuple>

#include "common/error.h"
#include "common/memory.h"
#include "format/nvfp4.h"
#include "format/scale_layout.h"
#include "gemm/workspace.h"
#include "linear/plan.h"
#include "model/linear_schemes.h"
#include "model/muon.h"
#include "model/transformer.h"
#include "train/optimizer.h"

namespace q2::train {

namespace {

using linear::BwdQuant;
using linear::FwdQuant;
using linear::Kept;
using linear::OperandId;
using linear::Source;

uint64_t nvfp4_bytes(int64_t rows, int64_t cols) { return static_cast<uint64_t>(blocked_nvfp4_bytes(rows, cols)); }

struct Shape {
  int64_t n, k;  // a block linear's W [n, k]
};

// The CUDA linear layers' scratch (cuda/linear/scratch.h), shared by every layer and never
// freed, as linear.cpp and product.cpp ask for it at `tokens` rows: an NVFP4 tensor per
// (operand, shape), grow-only BF16 buffers per slot (the padded input, a BF16 layer's W in a
// forward that keeps nothing, the expansions of NVFP4 operands of emulated products), and per
// stream MS-EDEN's float32 corrected scales (one per 16 values). `unkept`: some forward keeps
// nothing (recomputation's first pass, evaluation), its quantized X and W landing here.
uint64_t cuda_layer_scratch(const std::vector<linear::Plan>& plans, const Shape (&shapes)[model::kBlockLinears],
                            int64_t tokens, bool native, bool unkept) {
  enum { kPadded, kWeight, kDeqA, kDeqB, kDeqC, kDeqD, kRestA, kRestB, kSlots };  // cuda::Slot
  int64_t slot[kSlots] = {}, eden[2] = {};  // elements; stream 0, the side stream
  int64_t lists[2] = {}, list_rows[2] = {};  // the outlier split's DeviceDominated: elements, rows
  std::set<std::tuple<OperandId, int64_t, int64_t>> fp4;
  std::set<std::pair<int64_t, int64_t>> rests;  // the outlier split's NVFP4 rests of X
  auto grow = [](int64_t& at, int64_t n) { at = std::max(at, n); };
  auto slot_of = [](OperandId id) {
    return id == OperandId::kDgradA   ? kDeqA
           : id == OperandId::kDgradB ? kDeqB
           : id == OperandId::kWgradA ? kDeqC
                                      : kDeqD;
  };
  auto along_k = [](const linear::BackwardOperand& o) { return o.quantized() && o.quant != BwdQuant::kForward; };
  for (size_t i = 0; i < plans.size(); ++i) {
    const linear::Plan& p = plans[i];
    const int64_t n = shapes[i % model::kBlockLinears].n, k = shapes[i % model::kBlockLinears].k;
    const int64_t mp = p.padded_rows(tokens);
    const bool xq = p.x != FwdQuant::kBf16, wq = p.w != FwdQuant::kBf16, dense_x = p.saved_x != Kept::kNvfp4;
    if (mp != tokens) {
      grow(slot[kPadded], mp * n);                           // dY
      if (!dense_x || unkept) grow(slot[kPadded], mp * k);  // X, unless kept as the layer's own copy
    }
    const bool fwd_expanded = !(native && xq && wq);
    if (xq && fwd_expanded) grow(slot[kDeqA], mp * k);
    if (wq && fwd_expanded) grow(slot[kDeqB], n * k);
    if (unkept) {
      if (xq) fp4.insert({OperandId::kFwdX, mp, k});
      if (wq) fp4.insert({OperandId::kFwdW, n, k});
      else grow(slot[kWeight], n * k);
    }
    if (p.wgrad.outlier_split > 0) {  // cuda::CudaLinear's split_sources
      grow(slot[kRestA], mp * n);
      if (dense_x) grow(slot[kRestB], mp * k);
      else rests.insert({mp, k});
      grow(lists[0], n * (mp / p.wgrad.hadamard));
      grow(lists[1], k * (mp / p.wgrad.hadamard));
      grow(list_rows[0], n);
      grow(list_rows[1], k);
    }
    for (const linear::ProductPlan* prod : {&p.dgrad, &p.wgrad}) {
      const bool expanded = !(native && along_k(prod->a) && along_k(prod->b));
      for (const linear::BackwardOperand* o : {&prod->a, &prod->b}) {
        // The source [rows, cols], and whether the forward kept it as NVFP4 only.
        const int64_t rows = o->source == Source::kSavedW ? n : mp;
        const int64_t cols = o->source == Source::kDy ? n : k;
        const bool from_fp4 = (o->source == Source::kSavedW && p.saved_w == Kept::kNvfp4) ||
                              (o->source == Source::kSavedX && !dense_x);
        const int at = slot_of(o->id);
        if (!o->quantized() || o->quant == BwdQuant::kForward) {
          if (o->transposed && from_fp4) grow(slot[at], rows * cols);  // dequantized, or expanded as it is
          continue;
        }
        if (o->transposed) fp4.insert({o->id, cols, rows});
        else fp4.insert({o->id, rows, cols});
        if (expanded) grow(slot[at], rows * cols);
        if (o->quant == BwdQuant::kMsEden) grow(eden[o->id == OperandId::kDgradA ? 0 : 1], rows * cols / kBlock);
      }
    }
  }
  uint64_t bytes = 0;
  for (const auto& [id, r, c] : fp4) bytes += nvfp4_bytes(r, c);
  for (const int64_t e : slot) bytes += 2 * static_cast<uint64_t>(e);
  for (const int64_t e : eden) bytes += 4 * static_cast<uint64_t>(e);
  for (const auto& [r, c] : rests) bytes += nvfp4_bytes(r, c);
  for (int i = 0; i < 2; ++i) bytes += 4 * static_cast<uint64_t>(lists[i] + list_rows[i]);
  return bytes;
}

// The plan for one micro-batch of `batch` sequences; the fixed parts do not depend on it.
MemoryPlan plan_for(const model::ModelConfig& mc, const TrainConfig& c, const std::string& device, int64_t world,
                    int64_t batch, bool recompute, bool evaluates) {
  const bool cuda = device == "cuda";
  // Bytes of an activation element, and of a dense weight copy kept for backward (BF16 on the GPU).
  const uint64_t a = cuda ? 2 : 4;
  MemoryPlan p;
  p.device = device;
  p.micro_batch = batch;
  p.seq = c.seq_len;
  p.recompute = recompute;
  p.world = world;
  p.zero = c.zero == 1;
  p.evaluates = evaluates;

  // Parameters, gradients and optimizer state, per tensor as the optimizer allocates it.
  uint64_t muon_transient = 0;  // the largest matrix's orthogonalization buffers
  std::vector<uint64_t> state;  // floats, per parameter
  for (const model::Param& prm : model::Transformer::param_shapes(mc)) {
    const uint64_t n = static_cast<uint64_t>(prm.value.rows * prm.value.cols);
    p.parameters += 4 * n;
    p.gradients += 4 * n;
    state.push_back(state_floats(c, prm, mc));
    p.optimizer_whole += 4 * state.back();
    const MuonGroup g = c.optimizer == "muon" ? muon_group(prm, mc) : MuonGroup{ParamGroup::kScalar, {}};
    if (g.group != ParamGroup::kMatrix) continue;
    for (const int64_t rows : g.blocks) {  // float32 update, two BF16 iterates, s x s: two BF16, one float32
      const uint64_t e = static_cast<uint64_t>(rows * prm.value.cols), s = std::min<uint64_t>(rows, prm.value.cols);
      if (cuda) muon_transient = std::max(muon_transient, 8 * e + 8 * s * s);
    }
  }
  // ZeRO-1's shards as make_shard deals them.
  std::vector<uint64_t> shards(static_cast<size_t>(world), 0);
  const std::vector<int> owner = balance_owners(state, static_cast<int>(world));
  for (size_t i = 0; i < state.size(); ++i) shards[static_cast<size_t>(owner[i])] += 4 * state[i];
  p.optimizer_shard = *std::max_element(shards.begin(), shards.end());
  p.optimizer = p.zero ? p.optimizer_shard : p.optimizer_whole;

  // Each block linear's plan, as the model assigns the schemes (model/linear_schemes.h).
  std::vector<linear::Plan> plans;
  for (const linear::Scheme& s : model::linear_schemes(mc, method_scheme(c), c.precision))
    plans.push_back(linear::make_plan(s));
  const uint64_t T = static_cast<uint64_t>(batch * c.seq_len);
  const uint64_t d = mc.d_model, ff = mc.d_ff, qkv = mc.qkv_rows(), up = mc.mlp_in_rows(), V = mc.vocab;
  const uint64_t H = mc.n_heads, KV = mc.kv_heads();
  const bool lambdas = mc.resid_x0_lambdas;
  const Shape shapes[model::kBlockLinears] = {
      {mc.qkv_rows(), mc.d_model}, {mc.d_model, mc.d_model}, {mc.mlp_in_rows(), mc.d_model}, {mc.d_model, mc.d_ff}};
  // The width of each linear's X that only a layer keeping X by reference keeps alive: the
  // two norm outputs and the MLP's activation (attention's output is kept for attention's own
  // backward, counted with the block).
  const uint64_t by_reference[] = {d, 0, d, ff};

  // One block's forward keeps: its input (the previous block's output; x0 for the first) and
  // with the lambdas the mix of it with x0 that the block runs on, the norms' rstd, qkv, the QK
  // norms' rstd, attention's output and log-sum-exp, the mid-block residual, the MLP's
  // input-side output; and what its linears' schemes keep of each one's X and W. Blocks write
  // new tensors, never their input, so none of these is a copy.
  uint64_t common = T * a * ((lambdas ? 2 : 1) * d + qkv + d + d + up) + 2 * T * 4 + T * H * 4;
  if (mc.qk_norm) common += T * (H + KV) * 4;
  // The CPU reference's attention keeps its probabilities: float32 [batch, heads, seq, seq].
  if (!cuda) common += static_cast<uint64_t>(batch) * H * static_cast<uint64_t>(c.seq_len * c.seq_len) * 4;
  uint64_t layers = 0, largest = 0;  // every block's kept bytes, and the largest block's
  for (int64_t l = 0; l < mc.n_layers; ++l) {
    uint64_t layer = common;
    for (int w = 0; w < model::kBlockLinears; ++w) {
      const linear::Plan& lp = plans[static_cast<size_t>(l * model::kBlockLinears + w)];
      const Shape& s = shapes[w];
      const uint64_t k = static_cast<uint64_t>(s.k), rows = static_cast<uint64_t>(lp.padded_rows(batch * c.seq_len));
      if (lp.saved_x == Kept::kNvfp4)
        layer += nvfp4_bytes(static_cast<int64_t>(rows), s.k);
      else if (!cuda || rows != T)
        layer += rows * k * a;  // a copy (the CUDA layers keep an unpadded BF16 X by reference)
      else
        layer += T * a * by_reference[w];
      layer += lp.saved_w == Kept::kNvfp4 ? nvfp4_bytes(s.n, s.k) : static_cast<uint64_t>(s.n * s.k) * a;
    }
    layers += layer;
    largest = std::max(largest, layer);
  }

  // The last block's output (the final norm's input), the final norm's output and rstd, and with
  // the embedding norm the embedding's output and rstd (x0, the norm's output, is the first
  // block's input). Under recompute the blocks keep only their inputs.
  const uint64_t L = static_cast<uint64_t>(mc.n_layers);
  const uint64_t outer = T * a * d * (2 + (mc.embed_norm ? 1 : 0)) + T * 4 * (mc.embed_norm ? 2 : 1);
  p.activations = outer + (recompute ? L * T * a * d : layers);

  // The transients: the end of forward (the logits and their gradient), the start of backward
  // (the logits' gradient, dxf and the BF16 copy of the float32 LM head that CudaBackend::matmul
  // makes for the head's GEMMs, in forward beside the logits), one block's backward (the
  // logits' gradient, dxf, dx and with the lambdas dx0 throughout, and every gradient of the
  // block until its end: those of the MLP's down, up and norm, of wo, qkv and the attention
  // norm; under recompute, the block's activations made again, less the stream it mixes, which
  // backward drops at once), the optimizer step (Muon's buffers).
  const uint64_t logits = T * V * a, head_copy = cuda ? V * d * 2 : 0;
  const uint64_t block_backward = logits + T * a * ((lambdas ? 3 : 2) * d + ff + up + d + d + qkv + d) +
                                  (recompute ? largest - (lambdas ? T * a * d : 0) : 0);
  p.working = std::max({2 * logits, logits + T * a * d + head_copy, block_backward, muon_transient});

  if (cuda)
    p.buffers = gemm::kCublasLtWorkspaceBytes + cuda_layer_scratch(plans, shapes, static_cast<int64_t>(T),
                                                                   c.gemm == "native", recompute || evaluates);
  return p;
}

// "train.batch_size B x model.seq_len S with vocabulary V", as errors name a micro-batch.
std::string micro_batch_name(int64_t batch, int64_t seq, int64_t vocab) {
  return "train.batch_size " + std::to_string(batch) + " x model.seq_len " + std::to_string(seq) + " with vocabulary " +
         std::to_string(vocab);
}

}  // namespace

MemoryPlan plan_memory(const model::ModelConfig& mc, const TrainConfig& c, const std::string& device, int64_t world,
                       bool evaluates) {
  // A bound on the bytes per token the plan counts (float32 activations, every block and one
  // more, both logit tensors), so that its unsigned arithmetic is exact.
  const std::string what = micro_batch_name(c.batch_size, c.seq_len, mc.vocab);
  const int64_t widths = mc.d_model + mc.d_ff + mc.qkv_rows() + mc.mlp_in_rows(), heads = mc.n_heads + mc.kv_heads();
  const int64_t per_token = 8 * mc.vocab + (mc.n_layers + 3) * (24 * widths + 8 * (heads + 1) + 4 * mc.n_heads * c.seq_len);
  checked_mul(checked_mul(c.batch_size, c.seq_len, what), per_token, what);
  checked_mul(mc.total_params(), 32, "the model's parameters");
  if (world < 1) throw Error("a memory plan needs at least one rank, got " + std::to_string(world));
  return plan_for(mc, c, device, world, c.batch_size, c.recompute, evaluates);
}

std::string describe(const MemoryPlan& p, uint64_t free_bytes) {
  std::string s = "memory plan (" + p.device + ", micro-batch " + std::to_string(p.micro_batch) + " x " +
                  std::to_string(p.seq) + (p.recompute ? ", recompute" : "") +
                  (p.world > 1 ? ", per rank of " + std::to_string(p.world) + (p.zero ? " with ZeRO-1" : "") : "") +
                  "):\n";
  auto line = [&](const char* what, uint64_t b) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "  %-52s %12s\n", what, format_bytes(b).c_str());
    s += buf;
  };
  line("parameters (float32)", p.parameters);
  line("gradients (float32)", p.gradients);
  line(p.zero ? "optimizer state (ZeRO-1: the largest shard)" : "optimizer state", p.optimizer);
  line("saved activations per micro-batch", p.activations);
  if (p.buffers > 0) line("backend buffers (GEMM workspace, layer scratch)", p.buffers);
  line("largest transient (logits, backward)", p.working);
  line("predicted peak", p.peak());
  // The other dist.zero setting's peak, to compare.
  if (p.world > 1)
    line(p.zero ? "predicted peak without ZeRO-1 (dist.zero = 0)" : "predicted peak with ZeRO-1 (dist.zero = 1)",
         p.peak() - p.optimizer + (p.zero ? p.optimizer_whole : p.optimizer_shard));
  if (free_bytes > 0) line(p.device == "cuda" ? "free on the device now" : "available host memory now", free_bytes);
  s.pop_back();
  return s;
}

void check_fits(const MemoryPlan& p, uint64_t free_bytes, const model::ModelConfig& mc, const TrainConfig& c) {
  if (free_bytes == 0 || p.peak() <= free_bytes) return;
  std::string fixes;
  if (!p.recompute) {
    const MemoryPlan r = plan_for(mc, c, p.device, p.world, p.micro_batch, true, p.evaluates);
    if (r.peak() <= free_bytes) fixes += "\n  train.recompute = true (predicted peak " + format_bytes(r.peak()) + ")";
  }
  // The largest smaller micro-batch that divides train.batch_size, so that accumulation keeps
  // the tokens per step. The peak grows with the micro-batch: bisect for the largest that fits.
  const int64_t per_step = c.batch_size * c.grad_accum;
  for (const bool rc : {p.recompute, true}) {
    auto fits = [&](int64_t b) { return plan_for(mc, c, p.device, p.world, b, rc, p.evaluates).peak() <= free_bytes; };
    int64_t lo = 0, hi = p.micro_batch - 1;  // fits(lo) (0: none), and the search's top
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (fits(mid)) lo = mid;
      else hi = mid - 1;
    }
    while (lo > 0 && c.batch_size % lo != 0) --lo;
    if (lo > 0)
      fixes += "\n  train.batch_size = " + std::to_string(lo) + " with train.grad_accum = " +
               std::to_string(per_step / lo) + (rc && !p.recompute ? " and train.recompute = true" : "") +
               " (predicted peak " + format_bytes(plan_for(mc, c, p.device, p.world, lo, rc, p.evaluates).peak()) + ")";
    if (p.recompute) break;
  }
  throw Error("the model does not fit (" + micro_batch_name(p.micro_batch, p.seq, mc.vocab) +
              "): its predicted peak is " + format_bytes(p.peak()) + " but " + format_bytes(free_bytes) +
              (p.device == "cuda" ? " is free on the device" : " of host memory is available") + "\n" +
              describe(p, free_bytes) + "\n" +
              (fixes.empty() ? std::string("no smaller micro-batch fits, with or without train.recompute: use a smaller "
                                           "model or a device with more memory")
                             : "these would fit:" + fixes));
}

}  // namespace q2::train
