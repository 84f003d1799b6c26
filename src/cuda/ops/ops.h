#pragma once
// CUDA kernels of the model's non-linear-layer operations (the GPU backend's counterpart of
// model/cpu_ops.h, with the same accumulate / overwrite rules). Conventions:
//   - activations BF16 row-major [tokens, features] (row t = b * seq + s); parameters,
//     gradients and optimizer state float32; all pointers are device pointers, 16-byte aligned
//     (cudaMalloc'ed or pool buffers are), unless a comment says otherwise;
//   - everything runs asynchronously on the legacy default stream 0 (convert from float32 on
//     any stream); only the functions that return a host value (cross_entropy, sum_squares,
//     IdCheck::throw_if_invalid) synchronize.
//   - temporaries are stream-ordered pool allocations (cudaMallocAsync on stream 0).
// Math is float32 unless said otherwise; BF16 results are rounded to nearest even.
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "cuda/runtime/device.h"
#include "model/backend.h"

namespace q2::cuda::ops {

using bf16 = __nv_bfloat16;

// A device word in which kernels reading token ids record an id outside the vocabulary (the
// first one they see). The host validates ids before uploading them; this catches the rest.
class IdCheck {
 public:
  IdCheck();  // cleared
  unsigned long long* word() { return word_.get(); }
  // Synchronizes stream 0; throws q2::Error("<what>: token id I (row R) is outside the
  // vocabulary of V (detected on the GPU)") and clears the word if a kernel recorded one.
  void throw_if_invalid(const std::string& what, int64_t vocab);

 private:
  DeviceBuffer<unsigned long long> word_;
};

// ---- embedding ----
// out[t] = bf16(table[ids[t]]) for table [vocab, d]. A row whose id is out of range is
// written as NaN and recorded in `check` (if given).
void embedding_forward(const float* table, int64_t vocab, int64_t d, const uint32_t* ids, int64_t tokens, bf16* out,
                       IdCheck* check = nullptr);
// dtable[ids[t]] += dout[t], summed per id in increasing t (the CPU's order: deterministic and
// bit-identical to it). Out-of-range ids are skipped and recorded.
void embedding_backward(const bf16* dout, const uint32_t* ids, int64_t tokens, int64_t d, float* dtable, int64_t vocab,
                        IdCheck* check = nullptr);

// ---- RMSNorm ----
// y = bf16(x * rstd * w), rstd = 1 / sqrt(mean(x^2) + eps) per row (sum of squares in float64).
// w null: a norm without a gain (w = 1; nanochat's norms and embed_norm).
void rmsnorm_forward(const bf16* x, const float* w, int64_t rows, int64_t d, double eps, bf16* y, float* rstd);
// dx += (bf16), dw += (float32). dw sums fixed 64-row blocks in block order (like the CPU):
// deterministic, no atomics. w and dw are both null (no gain) or both given; null: dx only.
void rmsnorm_backward(const bf16* dy, const bf16* x, const float* w, const float* rstd, int64_t rows, int64_t d,
                      bf16* dx, float* dw);
// QK norm (cpu::head_rmsnorm_*): RMSNorm without a gain of each head_dim-wide head in columns
// [col0, col0 + n_heads * head_dim) of x [rows, ld], in place; rstd [rows * n_heads] (row-major,
// float32) written by forward. Backward in place on dy [rows, ld]: dy <- rstd * (dy - y *
// mean(dy * y)) per head, y [rows, ld] the forward's output.
void head_rmsnorm_forward(bf16* x, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim,
                          double eps, float* rstd);
void head_rmsnorm_backward(bf16* dy, const bf16* y, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads,
                           int64_t head_dim, const float* rstd);

// ---- RoPE ----
// In place on columns [col0, col0 + n_heads * head_dim) of x [rows, ld]; rotate-half pairs
// (i, i + head_dim/2), angle = pos * theta^(-2i/head_dim) in float64, pos = row % seq;
// direction -1 applies the inverse rotation. Needs head_dim even.
void rope(bf16* x, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta,
          int direction);

// ---- causal attention (flash-attention style, BF16 tensor cores, float32 accumulation) ----
// qkv [batch * seq, d + 2 kv] = q | k | v with heads contiguous, d = heads * head_dim, kv =
// kv_heads * head_dim (grouped-query: query head h reads key/value head h / (heads / kv_heads));
// head_dim 64 or 128 (anything else throws). Scores are scaled by 1/sqrt(head_dim). window < 0:
// query i attends to keys j <= i; window w >= 0: to i - w <= j <= i (model::AttentionDims).
struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t kv_heads = 0;  // 0: heads (multi-head); else must divide heads
  int64_t window = -1;
  int64_t kv() const { return kv_heads > 0 ? kv_heads : heads; }
};
// out [batch * seq, d]; lse [batch * heads, seq] = natural log-sum-exp of each query row's
// scaled scores. The backward needs qkv, out and lse unchanged.
void attention_forward(const bf16* qkv, const AttentionShape& s, bf16* out, float* lse);
// dqkv [batch * seq, d + 2 kv] overwritten (all of it). Deterministic (no atomics): dK/dV and dQ
// come from two kernels that each recompute the probabilities from lse (dK/dV of a key/value
// head summed over its query heads in order, in registers); the dQ kernel runs on an internal
// helper stream forked from and joined back to stream 0 (ordering as on stream 0).
void attention_backward(const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, const AttentionShape& s,
                        bf16* dqkv);

// ---- SwiGLU ----
// h12 [rows, 2h] = [a | b]; g [rows, h] = silu(a) * b; dh12 overwritten.
void swiglu_forward(const bf16* h12, int64_t rows, int64_t hidden, bf16* g);
void swiglu_backward(const bf16* dg, const bf16* h12, int64_t rows, int64_t hidden, bf16* dh12);

// ---- ReLU^2 (cpu::relu2_*) ----
// g = bf16(relu(h)^2) over n elements; dh = bf16(2 relu(h) dg), overwritten.
void relu2_forward(const bf16* h, int64_t n, bf16* g);
void relu2_backward(const bf16* dg, const bf16* h, int64_t n, bf16* dh);

// ---- resid / x0 lambdas (cpu::residual_mix_*) ----
// a, b: float32 parameter vectors on the device; layer i's scalars are a[i], b[i] (read by the
// kernels: no synchronization). Forward: y = bf16(a[i] x + b[i] x0) over [rows, d].
void residual_mix_forward(const bf16* x, const bf16* x0, const float* a, const float* b, int64_t i, int64_t rows,
                          int64_t d, bf16* y);
// dxy: dL/dy on entry, bf16(a[i] dL/dy) = dL/dx on exit; dx0 = bf16(dx0 + b[i] dL/dy);
// da[i] += <dL/dy, x>, db[i] += <dL/dy, x0> (float64 per-row sums added in row order, like the
// CPU: deterministic, no atomics).
void residual_mix_backward(bf16* dxy, const bf16* x, const bf16* x0, const float* a, const float* b, int64_t i,
                           int64_t rows, int64_t d, bf16* dx0, float* da, float* db);

// ---- logit softcap (cpu::softcap_*) ----
// z <- bf16(cap tanh(z / cap)) in place; dz <- bf16(dz (1 - (y / cap)^2)), y the capped logits.
void softcap_forward(bf16* z, int64_t n, float cap);
void softcap_backward(bf16* dz, const bf16* y, int64_t n, float cap);

// ---- elementwise and reductions ----
void add(const bf16* a, const bf16* b, int64_t n, bf16* out);  // out = bf16(a + b), one rounding; out may be a
void scale(float* x, int64_t n, float s);
void scale(bf16* x, int64_t n, float s);  // x = bf16(x * s)
void convert(const float* src, bf16* dst, int64_t n, cudaStream_t stream = 0);
void convert(const bf16* src, float* dst, int64_t n);
// Sum of x^2 in float64, deterministic (fixed blocks, fixed-order reduction). The async form
// writes the device double *result; the plain form returns it (synchronizes); the _each form
// returns that of each of `count` arrays into host_out, with one read back and synchronization.
void sum_squares_async(const float* x, int64_t n, double* result);
double sum_squares(const float* x, int64_t n);
void sum_squares_each(const float* const* x, const int64_t* n, int64_t count, double* host_out);

// ---- fused softmax cross-entropy ----
// Per row: max and log-sum-exp in float32, loss = lse - logits[target]; returns the sum of the
// row losses in float64 (fixed order; synchronizes). If dlogits is given it is overwritten
// with bf16(scale * (softmax - onehot)); it may alias logits (in place). Throws if a target
// is outside [0, vocab).
double cross_entropy(const bf16* logits, int64_t rows, int64_t vocab, const uint32_t* targets, bf16* dlogits,
                     float scale);

// ---- AdamW ----
// The CPU backend's update (model/cpu_model_backend.cpp), the same float32 operations in the same
// order: bit-identical results.
void adamw(float* w, const float* g, float* m, float* v, int64_t n, const model::AdamWHyper& h, bool decay);

// ---- Muon (model/muon.h; the GEMMs of the orthogonalization are cuda/muon.cpp's) ----
// m = m + (1 - mu) (g - m) and the Nesterov u = g + mu (m - g), float32, n values, g read as
// g * grad_scale: bit-identical to the CPU backend's.
void muon_momentum(const float* g, float* m, float* u, int64_t n, double momentum, float grad_scale);
// x = bf16(u / (scale sqrt(*sum_sq) + eps)); *sum_sq is read on the device (sum_squares_async).
void muon_normalize(const float* u, const double* sum_sq, double scale, double eps, bf16* x, int64_t n);
// dst = bf16(s * src), stored as float32 (exactly): the BF16 term a Newton-Schulz step adds to a
// product, accumulated onto in float32 (cuda/muon.cpp).
void scaled_copy(const bf16* src, float s, float* dst, int64_t n);
// The variance reduction of the orthogonalized x [rows, cols]: updates the factored second
// moments v (model::muon_second_moment_size(rows, cols) values) and writes the factors f (as
// many) that scale x's rows (rows >= cols) or columns. Deterministic.
void muon_variance(const bf16* x, int64_t rows, int64_t cols, float* v, double beta2, float* f);
// w -= lr u + lr wd w [u w >= 0] with u = x scaled by f per row (rows >= cols) or column; lr is
// the block's (aspect ratio applied).
void muon_update(float* w, const bf16* x, const float* f, int64_t rows, int64_t cols, double lr, double weight_decay);

}  // namespace q2::cuda::ops
