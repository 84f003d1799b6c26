#pragma once
// The model's non-linear-layer operations on the CPU, float32, each with its backward.
// Backward functions accumulate (+=) into parameter gradients and overwrite or accumulate into
// input gradients as documented. Rows are tokens: row t = b * seq + s.
#include <cstdint>
#include <vector>

#include "common/matrix.h"
#include "model/attention.h"

namespace q2::model::cpu {

// C (+)= alpha * op(A) op(B) for row-major matrices (OpenBLAS sgemm).
void matmul(const Matrix& a, bool trans_a, const Matrix& b, bool trans_b, Matrix& c, float alpha = 1.0f,
            bool accumulate = false);

void embedding_forward(const Matrix& table, const std::vector<uint32_t>& ids, Matrix& out);
void embedding_backward(const Matrix& dout, const std::vector<uint32_t>& ids, Matrix& dtable);  // +=

// y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row; rstd is kept for backward.
// w null: no gain (w = 1), and backward's dw must be null too.
void rmsnorm_forward(const Matrix& x, const float* w, double eps, Matrix& y, std::vector<float>& rstd);
void rmsnorm_backward(const Matrix& dy, const Matrix& x, const float* w, const std::vector<float>& rstd, Matrix& dx,
                      float* dw);  // dx +=, dw +=

// RMSNorm without a gain of each head_dim-wide head in columns [col0, col0 + n_heads * head_dim)
// of x, in place: x <- x * rstd, rstd [rows * n_heads] (row-major) kept for backward (QK norm).
void head_rmsnorm_forward(Matrix& x, int64_t col0, int64_t n_heads, int64_t head_dim, double eps,
                          std::vector<float>& rstd);
// In place on those columns of dy: dx = rstd * (dy - y * mean(dy * y)), y the forward's output.
void head_rmsnorm_backward(Matrix& dy, const Matrix& y, int64_t col0, int64_t n_heads, int64_t head_dim,
                           const std::vector<float>& rstd);

// Rotary embedding in place on columns [col0, col0 + n_heads * head_dim) of x, rotate-half
// convention (pairs i and i + head_dim/2), angle = pos * theta^(-2i/head_dim), pos = t % seq.
// direction -1 applies the inverse rotation (the backward of the forward).
void rope(Matrix& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta, int direction);

// Causal attention over qkv [T, a.qkv_cols()] (q | k | v, heads contiguous in each; query head h
// reads key/value head h / a.group()), scores scaled by 1 / sqrt(head_dim), keys limited to
// a.window: out [T, a.q_cols()]; probs [batch * heads, seq, seq] kept for backward, zero outside
// the window.
void attention_forward(const Matrix& qkv, const AttentionDims& a, Matrix& out, std::vector<float>& probs);
void attention_backward(const Matrix& dout, const Matrix& qkv, const std::vector<float>& probs, const AttentionDims& a,
                        Matrix& dqkv);  // dqkv overwritten (all of it)

// g = silu(h12[:, :h]) * h12[:, h:]
void swiglu_forward(const Matrix& h12, Matrix& g);
void swiglu_backward(const Matrix& dg, const Matrix& h12, Matrix& dh12);  // dh12 overwritten

// g = relu(h)^2 (nanochat's MLP activation)
void relu2_forward(const Matrix& h, Matrix& g);
void relu2_backward(const Matrix& dg, const Matrix& h, Matrix& dh);  // dh overwritten

// y = a * x + b * x0 (nanochat's resid / x0 lambdas, a = resid_lambdas[l], b = x0_lambdas[l]).
void residual_mix_forward(const Matrix& x, const Matrix& x0, float a, float b, Matrix& y);
// dxy: dL/dy on entry, a * dL/dy = dL/dx on exit; dx0 += b dL/dy; da += <dL/dy, x>, db += <dL/dy, x0>
// (float64 sums in a fixed order).
void residual_mix_backward(Matrix& dxy, const Matrix& x, const Matrix& x0, float a, float b, Matrix& dx0, float& da,
                           float& db);

// z <- cap * tanh(z / cap) in place (nanochat's logit softcap).
void softcap_forward(Matrix& z, float cap);
// dz <- dz * (1 - (y / cap)^2), y the capped logits.
void softcap_backward(Matrix& dz, const Matrix& y, float cap);

// Mean cross-entropy over the rows; dlogits (overwritten) = scale * d(sum of losses)/d logits.
// Returns the summed loss in float64 (not the mean).
double cross_entropy(const Matrix& logits, const std::vector<uint32_t>& targets, Matrix* dlogits, float scale);

// out = a + b elementwise; out may be a.
void add(const Matrix& a, const Matrix& b, Matrix& out);

}  // namespace q2::model::cpu
