// 10. The outlier split (linear/outlier_split.h, the CPU reference): wgrad's operands are the
// transposes of dY [R, N] (BF16) and of X [R, K] (the saved NVFP4 X_q, or BF16), cut along R into
// 128-token chunks.
//
// Design: three small kernels around the quantizers, which run unchanged on the rests.
// find_dominated: one thread per (column, chunk), columns fastest so that each of its 128 loads
// is coalesced across the warp; the decision is the reference's own (linear::dominated_element).
// compact_dominated: one warp per column turns its chunks' indices into a list, 32 chunks at a
// time in chunk order (a ballot's prefix count places each), and zeroes the taken elements in the
// rest (a BF16 store, or a nibble cleared by atomicAnd, as two columns share a byte); a warp, not
// a thread, as a 64k-token batch gives each column 512 chunks. add_dominated_products: one thread
// per (j, i) of dW merging the two lists, chunk by chunk, in the reference's order; a thread whose
// row and column gave up nothing returns.
#include "cuda/quant/device_common.cuh"
#include "linear/outlier_split.h"

namespace q2::cuda {
namespace detail {
namespace {

constexpr int kChunk = 128, kThreads = 128;

template <class Values>
__global__ void __launch_bounds__(kThreads) find_dominated_kernel(Values v, int64_t cols, int64_t chunks, double share,
                                                                   int32_t* __restrict__ index) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= cols * chunks) return;
  const int64_t j = id % cols, c = id / cols;
  const int at = linear::dominated_element([&](int t) { return v(c * kChunk + t, j); }, kChunk, share);
  index[j * chunks + c] = at < 0 ? -1 : static_cast<int32_t>(c * kChunk + at);
}

// Zeroes element (r, c) of the rest: a BF16 [R, cols] or the packed codes of an NVFP4 [R, cols].
struct Bf16Rest {
  __nv_bfloat16* x;
  int64_t cols;
  __device__ void zero(int64_t r, int64_t c) const { x[r * cols + c] = __float2bfloat16(0.0f); }
};
struct Nvfp4Rest {
  uint8_t* packed;
  int64_t cols;
  __device__ void zero(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    uint8_t* byte = packed + i / 2;
    const uintptr_t a = reinterpret_cast<uintptr_t>(byte);
    const int shift = 8 * static_cast<int>(a & 3) + 4 * static_cast<int>(i & 1);
    atomicAnd(reinterpret_cast<unsigned int*>(a & ~uintptr_t{3}), ~(0xFu << shift));
  }
};

template <class Rest>
__global__ void __launch_bounds__(kThreads) compact_dominated_kernel(int64_t cols, int64_t chunks,
                                                                      int32_t* __restrict__ index,
                                                                      int32_t* __restrict__ count, Rest rest) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= cols) return;  // the whole warp: one column each
  int32_t* list = index + j * chunks;
  int n = 0;
  for (int64_t base = 0; base < chunks; base += 32) {
    const int32_t t = base + lane < chunks ? list[base + lane] : -1;
    const unsigned taken = __ballot_sync(0xffffffffu, t >= 0);
    __syncwarp();  // all 32 read before any write: compacted in place, at n + rank <= base + lane
    if (t >= 0) {
      list[n + __popc(taken & ((1u << lane) - 1))] = t;
      rest.zero(t, j);
    }
    n += __popc(taken);
  }
  if (lane == 0) count[j] = n;
}

template <class BValues>
__global__ void __launch_bounds__(kThreads) add_dominated_products_kernel(
    const __nv_bfloat16* __restrict__ dy, int64_t n, const int32_t* __restrict__ index_a,
    const int32_t* __restrict__ count_a, BValues b, int64_t k, const int32_t* __restrict__ index_b,
    const int32_t* __restrict__ count_b, int64_t chunks, float* __restrict__ out) {
  const int64_t j = blockIdx.y, i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= k) return;
  const int na = count_a[j], nb = count_b[i];
  if (na == 0 && nb == 0) return;
  const int32_t *la = index_a + j * chunks, *lb = index_b + i * chunks;
  auto term = [&](int32_t t, float acc) { return __fmaf_rn(__bfloat162float(dy[t * n + j]), b(t, i), acc); };
  float acc = 0;
  for (int pa = 0, pb = 0; pa < na || pb < nb;) {
    const int32_t ca = pa < na ? la[pa] / kChunk : INT32_MAX, cb = pb < nb ? lb[pb] / kChunk : INT32_MAX;
    const int32_t c = min(ca, cb);
    int32_t ta = -1;
    if (ca == c) ta = la[pa++], acc = term(ta, acc);
    if (cb == c) {
      const int32_t tb = lb[pb++];
      if (tb != ta) acc = term(tb, acc);
    }
  }
  out[j * k + i] += acc;
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

Nvfp4Source values_of(const DeviceNVFP4& a) {
  return {a.packed.get(), a.scales.get(), a.tensor_scale.get(), a.cols, (a.scale_cols() + 3) / 4};
}

void require_split_shape(int64_t rows, int64_t cols, const std::string& name) {
  require(rows > 0 && rows % kChunk == 0, name, "needs a positive multiple of 128 rows for the outlier split");
  require(cols > 0 && cols * (rows / kChunk) < (int64_t{1} << 31), name, "is too large for the outlier split");
}

template <class Values, class Rest>
void split(Values v, Rest rest, int64_t rows, int64_t cols, double share, DeviceDominated& d, cudaStream_t stream) {
  d.ensure(cols, rows / kChunk);
  find_dominated_kernel<<<blocks_for(cols * d.chunks), kThreads, 0, stream>>>(v, cols, d.chunks, share,
                                                                                d.index.get());
  check_launch("find_dominated_kernel");
  compact_dominated_kernel<<<blocks_for(cols * 32), kThreads, 0, stream>>>(cols, d.chunks, d.index.get(),
                                                                            d.count.get(), rest);
  check_launch("compact_dominated_kernel");
}

template <class BValues>
void add_products(const BF16View& dy, const DeviceDominated& da, BValues b, int64_t k, const DeviceDominated& db,
                  float* out, cudaStream_t stream) {
  require(da.rows == dy.cols && db.rows == k && da.chunks == db.chunks && da.chunks * kChunk == dy.rows, dy.name,
          "does not match the outlier split's lists");
  require(dy.cols < 65536, dy.name, "has 65536 or more columns (the outlier split's grid)");
  add_dominated_products_kernel<<<dim3(blocks_for(k), static_cast<unsigned>(dy.cols)), kThreads, 0, stream>>>(
      dy.data, dy.cols, da.index.get(), da.count.get(), b, k, db.index.get(), db.count.get(), da.chunks, out);
  check_launch("add_dominated_products_kernel");
}

}  // namespace
}  // namespace detail

void DeviceDominated::ensure(int64_t r, int64_t c) {
  if (r * c > index.size()) index = DeviceBuffer<int32_t>(r * c);
  if (r > count.size()) count = DeviceBuffer<int32_t>(r);
  rows = r;
  chunks = c;
}

void split_dominated_transposed_async(const BF16View& x, double share, DeviceDominated& d, __nv_bfloat16* rest,
                                      cudaStream_t stream) {
  detail::require_split_shape(x.rows, x.cols, x.name);
  check(cudaMemcpyAsync(rest, x.data, static_cast<size_t>(x.rows * x.cols) * 2, cudaMemcpyDeviceToDevice, stream),
        "cudaMemcpyAsync (outlier split rest)");
  detail::split(detail::Bf16Source{x.data, x.cols, 1}, detail::Bf16Rest{rest, x.cols}, x.rows, x.cols, share, d,
                stream);
}

void split_dominated_transposed_async(const DeviceNVFP4& a, const std::string& name, double share, DeviceDominated& d,
                                      DeviceNVFP4& rest, cudaStream_t stream) {
  detail::require_split_shape(a.rows, a.cols, name);
  rest.ensure(a.rows, a.cols);
  auto copy = [&](void* dst, const void* src, size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync (outlier split rest)");
  };
  copy(rest.packed.get(), a.packed.get(), a.packed.bytes());
  copy(rest.scales.get(), a.scales.get(), a.scales.bytes());
  copy(rest.tensor_scale.get(), a.tensor_scale.get(), sizeof(float));
  detail::split(detail::values_of(a), detail::Nvfp4Rest{rest.packed.get(), a.cols}, a.rows, a.cols, share, d, stream);
}

void add_dominated_products_async(const BF16View& dy, const DeviceDominated& da, const DeviceNVFP4& x,
                                  const DeviceDominated& db, float* out, cudaStream_t stream) {
  detail::add_products(dy, da, detail::values_of(x), x.cols, db, out, stream);
}

void add_dominated_products_async(const BF16View& dy, const DeviceDominated& da, const BF16View& x,
                                  const DeviceDominated& db, float* out, cudaStream_t stream) {
  detail::add_products(dy, da, detail::Bf16Source{x.data, x.cols, 1}, x.cols, db, out, stream);
}

}  // namespace q2::cuda
