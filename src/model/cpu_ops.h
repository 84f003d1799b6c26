#pragma once
// The model's non-linear-layer operations on the CPU, float32, each with its backward.
// Backward functions accumulate (+=) into parameter gradients and overwrite or accumulate into
// input gradients as documented. Rows are tokens: row t = b * seq + s.
#include <cstdint>
#include <vector>

#include "common/matrix.h"

namespace q2::model::cpu {

// C (+)= alpha * op(A) op(B) for row-major matrices (OpenBLAS sgemm).
void matmul(const Matrix& a, bool trans_a, const Matrix& b, bool trans_b, Matrix& c, float alpha = 1.0f,
            bool accumulate = false);

void embedding_forward(const Matrix& table, const std::vector<uint32_t>& ids, Matrix& out);
void embedding_backward(const Matrix& dout, const std::vector<uint32_t>& ids, Matrix& dtable);  // +=

// y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row; rstd is kept for backward.
void rmsnorm_forward(const Matrix& x, const float* w, double eps, Matrix& y, std::vector<float>& rstd);
void rmsnorm_backward(const Matrix& dy, const Matrix& x, const float* w, const std::vector<float>& rstd, Matrix& dx,
                      float* dw);  // dx +=, dw +=

// Rotary embedding in place on columns [col0, col0 + n_heads * head_dim) of x, rotate-half
// convention (pairs i and i + head_dim/2), angle = pos * theta^(-2i/head_dim), pos = t % seq.
// direction -1 applies the inverse rotation (the backward of the forward).
void rope(Matrix& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta, int direction);

// Causal multi-head attention over qkv [T, 3d] (q | k | v, heads contiguous in each):
// out [T, d]; probs [batch * heads, seq, seq] kept for backward.
void attention_forward(const Matrix& qkv, int64_t batch, int64_t seq, int64_t n_heads, Matrix& out,
                       std::vector<float>& probs);
void attention_backward(const Matrix& dout, const Matrix& qkv, const std::vector<float>& probs, int64_t batch,
                        int64_t seq, int64_t n_heads, Matrix& dqkv);  // dqkv overwritten (all of it)

// g = silu(h12[:, :h]) * h12[:, h:]
void swiglu_forward(const Matrix& h12, Matrix& g);
void swiglu_backward(const Matrix& dg, const Matrix& h12, Matrix& dh12);  // dh12 overwritten

// Mean cross-entropy over the rows; dlogits (overwritten) = scale * d(sum of losses)/d logits.
// Returns the summed loss in float64 (not the mean).
double cross_entropy(const Matrix& logits, const std::vector<uint32_t>& targets, Matrix* dlogits, float scale);

void add_inplace(Matrix& a, const Matrix& b);

}  // namespace q2::model::cpu
