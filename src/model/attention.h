#pragma once
// The shape of one causal self-attention call: q | k | v side by side in one [batch * seq, q_cols
// + 2 kv_cols] tensor (the fused QKV projection), heads contiguous in each.
#include <algorithm>
#include <cstdint>

namespace q2::model {

struct AttentionDims {
  int64_t batch = 1, seq = 1, n_heads = 1, n_kv_heads = 1, head_dim = 2;
  // -1: query i attends to every key j <= i; w >= 0: to i - w <= j <= i only (nanochat's sliding
  // window, FlashAttention's window_size = (w, 0)).
  int64_t window = -1;

  int64_t group() const { return n_heads / n_kv_heads; }  // query heads per key/value head
  int64_t q_cols() const { return n_heads * head_dim; }
  int64_t kv_cols() const { return n_kv_heads * head_dim; }
  int64_t qkv_cols() const { return q_cols() + 2 * kv_cols(); }
  int64_t first_key(int64_t i) const { return window < 0 ? 0 : std::max<int64_t>(0, i - window); }
};

}  // namespace q2::model
