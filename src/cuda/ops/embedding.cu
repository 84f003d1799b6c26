// Token embedding: a row gather (forward) and a deterministic scatter-add (backward). The
// backward sorts the token positions by id (stable radix sort), so each table row is summed by
// one block in increasing token order: no atomics, and the CPU's exact summation order.
#include <algorithm>
#include <cub/device/device_radix_sort.cuh>
#include <string>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {

IdCheck::IdCheck() : word_(1) { check(cudaMemset(word_.get(), 0, sizeof(unsigned long long)), "cudaMemset"); }

void IdCheck::throw_if_invalid(const std::string& what, int64_t vocab) {
  unsigned long long w = 0;
  check(cudaMemcpyAsync(&w, word_.get(), sizeof w, cudaMemcpyDeviceToHost, 0), "reading the id check");
  check(cudaStreamSynchronize(0), "cudaStreamSynchronize");
  if (!w) return;
  check(cudaMemsetAsync(word_.get(), 0, sizeof w, 0), "clearing the id check");
  const uint32_t id = static_cast<uint32_t>(w), row = static_cast<uint32_t>(w >> 32) & 0x7FFFFFFFu;
  throw Error(what + ": token id " + std::to_string(id) + " (row " + std::to_string(row) +
              ") is outside the vocabulary of " + std::to_string(vocab) + " (detected on the GPU)");
}

namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(const float* __restrict__ table, uint32_t vocab, int64_t d,
                                         const uint32_t* __restrict__ ids, bf16* __restrict__ out,
                                         unsigned long long* bad) {
  const int64_t t = blockIdx.x;
  const uint32_t id = ids[t];
  bf16* o = out + t * d;
  if (id >= vocab) {
    if (threadIdx.x == 0) detail::record_bad_id(bad, t, id);
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = __float2bfloat16_rn(__int_as_float(0x7FC00000));
    return;
  }
  const float* row = table + static_cast<int64_t>(id) * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = __float2bfloat16_rn(row[c]);
}

__global__ void iota_kernel(uint32_t* v, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    v[i] = static_cast<uint32_t>(i);
}

// Block p handles the run of equal ids that starts at sorted position p (other blocks exit):
// each thread owns columns and adds the run's rows in increasing token order, with kAhead
// loads in flight (frequent tokens make runs of hundreds of rows).
constexpr int kAhead = 16;

__global__ void __launch_bounds__(1024)
    embedding_backward_kernel(const bf16* __restrict__ dout, const uint32_t* __restrict__ sorted_ids,
                              const uint32_t* __restrict__ order, int64_t tokens, int64_t d, float* __restrict__ dtable,
                              uint32_t vocab, unsigned long long* bad) {
  const int64_t p = blockIdx.x;
  const uint32_t id = sorted_ids[p];
  if (p > 0 && sorted_ids[p - 1] == id) return;
  if (id >= vocab) {
    if (threadIdx.x == 0) detail::record_bad_id(bad, order[p], id);
    return;
  }
  int64_t end = p + 1;
  while (end < tokens && sorted_ids[end] == id) ++end;
  float* row = dtable + static_cast<int64_t>(id) * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = row[c];
    int64_t q = p;
    for (; q + kAhead <= end; q += kAhead) {
      float v[kAhead];
#pragma unroll
      for (int k = 0; k < kAhead; ++k) v[k] = __bfloat162float(dout[static_cast<int64_t>(order[q + k]) * d + c]);
#pragma unroll
      for (int k = 0; k < kAhead; ++k) acc += v[k];
    }
    for (; q < end; ++q) acc += __bfloat162float(dout[static_cast<int64_t>(order[q]) * d + c]);
    row[c] = acc;
  }
}

}  // namespace

void embedding_forward(const float* table, int64_t vocab, int64_t d, const uint32_t* ids, int64_t tokens, bf16* out,
                       IdCheck* check_ids) {
  if (tokens <= 0 || d <= 0) return;
  detail::require(vocab > 0 && vocab <= UINT32_MAX, "embedding_forward", "bad vocabulary size");
  embedding_forward_kernel<<<static_cast<unsigned>(tokens), kThreads>>>(table, static_cast<uint32_t>(vocab), d, ids,
                                                                        out, check_ids ? check_ids->word() : nullptr);
  check_launch("embedding_forward_kernel");
}

void embedding_backward(const bf16* dout, const uint32_t* ids, int64_t tokens, int64_t d, float* dtable, int64_t vocab,
                        IdCheck* check_ids) {
  if (tokens <= 0 || d <= 0) return;
  detail::require(vocab > 0 && vocab <= UINT32_MAX && tokens < INT32_MAX, "embedding_backward",
                  "bad vocabulary size or too many tokens");
  const int n = static_cast<int>(tokens);
  detail::Scratch<uint32_t> order_in(n), sorted_ids(n), order(n);
  iota_kernel<<<detail::grid_for(n, kThreads), kThreads>>>(order_in.get(), n);
  check_launch("iota_kernel");
  // All 32 bits are sorted: an out-of-range id must not split the run of a valid one.
  const int end_bit = 32;
  size_t temp_bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids, sorted_ids.get(), order_in.get(), order.get(), n, 0,
                                        end_bit, cudaStream_t{0}),
        "cub::DeviceRadixSort (size query)");
  detail::Scratch<unsigned char> temp(static_cast<int64_t>(temp_bytes));
  check(cub::DeviceRadixSort::SortPairs(temp.get(), temp_bytes, ids, sorted_ids.get(), order_in.get(), order.get(), n,
                                        0, end_bit, cudaStream_t{0}),
        "cub::DeviceRadixSort");
  const int threads = static_cast<int>(std::min<int64_t>(1024, (d + 31) / 32 * 32));  // a column per thread
  embedding_backward_kernel<<<static_cast<unsigned>(n), threads>>>(dout, sorted_ids.get(), order.get(), tokens, d,
                                                                   dtable, static_cast<uint32_t>(vocab),
                                                                   check_ids ? check_ids->word() : nullptr);
  check_launch("embedding_backward_kernel");
}

}  // namespace q2::cuda::ops
