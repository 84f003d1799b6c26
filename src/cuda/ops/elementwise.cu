// Residual add, scaling, dtype conversion and the squared norm: memory-bound grid-stride
// kernels with 16-byte accesses and a scalar tail.
#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

using detail::grid_for;
constexpr int kThreads = 256;

__device__ __forceinline__ int64_t tid() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t nthreads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// out may be a: each thread reads its elements before it writes them (no __restrict__).
__global__ void add_bf16_kernel(const bf16* a, const bf16* b, int64_t n, bf16* out) {
  const int64_t nv = n / 8;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    uint4 va = reinterpret_cast<const uint4*>(a)[i];
    const uint4 vb = reinterpret_cast<const uint4*>(b)[i];
    auto* pa = reinterpret_cast<__nv_bfloat162*>(&va);
    const auto* pb = reinterpret_cast<const __nv_bfloat162*>(&vb);
#pragma unroll
    for (int k = 0; k < 4; ++k) pa[k] = __hadd2(pa[k], pb[k]);  // exact sum, rounded once
    reinterpret_cast<uint4*>(out)[i] = va;
  }
  for (int64_t i = nv * 8 + tid(); i < n; i += nthreads()) out[i] = __hadd(a[i], b[i]);
}

__global__ void scale_f32_kernel(float* x, int64_t n, float s) {
  const int64_t nv = n / 4;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    float4 v = reinterpret_cast<float4*>(x)[i];
    v.x *= s;
    v.y *= s;
    v.z *= s;
    v.w *= s;
    reinterpret_cast<float4*>(x)[i] = v;
  }
  for (int64_t i = nv * 4 + tid(); i < n; i += nthreads()) x[i] *= s;
}

__global__ void scale_bf16_kernel(bf16* x, int64_t n, float s) {
  const int64_t nv = n / 8;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    uint4 v = reinterpret_cast<uint4*>(x)[i];
    auto* p = reinterpret_cast<bf16*>(&v);
#pragma unroll
    for (int k = 0; k < 8; ++k) p[k] = __float2bfloat16_rn(__bfloat162float(p[k]) * s);
    reinterpret_cast<uint4*>(x)[i] = v;
  }
  for (int64_t i = nv * 8 + tid(); i < n; i += nthreads()) x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * s);
}

__global__ void f32_to_bf16_kernel(const float* src, bf16* dst, int64_t n) {
  const int64_t nv = n / 8;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    const float4 lo = reinterpret_cast<const float4*>(src)[2 * i], hi = reinterpret_cast<const float4*>(src)[2 * i + 1];
    uint4 v;
    auto* p = reinterpret_cast<__nv_bfloat162*>(&v);
    p[0] = __floats2bfloat162_rn(lo.x, lo.y);
    p[1] = __floats2bfloat162_rn(lo.z, lo.w);
    p[2] = __floats2bfloat162_rn(hi.x, hi.y);
    p[3] = __floats2bfloat162_rn(hi.z, hi.w);
    reinterpret_cast<uint4*>(dst)[i] = v;
  }
  for (int64_t i = nv * 8 + tid(); i < n; i += nthreads()) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(const bf16* src, float* dst, int64_t n) {
  const int64_t nv = n / 8;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    const uint4 v = reinterpret_cast<const uint4*>(src)[i];
    const auto* p = reinterpret_cast<const bf16*>(&v);
    reinterpret_cast<float4*>(dst)[2 * i] =
        make_float4(__bfloat162float(p[0]), __bfloat162float(p[1]), __bfloat162float(p[2]), __bfloat162float(p[3]));
    reinterpret_cast<float4*>(dst)[2 * i + 1] =
        make_float4(__bfloat162float(p[4]), __bfloat162float(p[5]), __bfloat162float(p[6]), __bfloat162float(p[7]));
  }
  for (int64_t i = nv * 8 + tid(); i < n; i += nthreads()) dst[i] = __bfloat162float(src[i]);
}

// The block count depends on n only, so the summation order (and the result) is fixed.
constexpr int kSsqBlocks = 1024;
unsigned ssq_blocks(int64_t n) { return grid_for((n + 7) / 8, kThreads, kSsqBlocks); }

__global__ void sum_squares_partial_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double shared[32];
  double acc = 0;  // float^2 is exact in float64
  const int64_t nv = n / 4;
  for (int64_t i = tid(); i < nv; i += nthreads()) {
    const float4 v = reinterpret_cast<const float4*>(x)[i];
    acc += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
           static_cast<double>(v.w) * v.w;
  }
  for (int64_t i = nv * 4 + tid(); i < n; i += nthreads()) acc += static_cast<double>(x[i]) * x[i];
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace

void add(const bf16* a, const bf16* b, int64_t n, bf16* out) {
  if (n <= 0) return;
  detail::require_aligned(a, "add", "a");
  detail::require_aligned(b, "add", "b");
  detail::require_aligned(out, "add", "out");
  add_bf16_kernel<<<grid_for(n / 8 + 1, kThreads), kThreads>>>(a, b, n, out);
  check_launch("add_bf16_kernel");
}

void scale(float* x, int64_t n, float s) {
  if (n <= 0) return;
  detail::require_aligned(x, "scale", "x");
  scale_f32_kernel<<<grid_for(n / 4 + 1, kThreads), kThreads>>>(x, n, s);
  check_launch("scale_f32_kernel");
}

void scale(bf16* x, int64_t n, float s) {
  if (n <= 0) return;
  detail::require_aligned(x, "scale", "x");
  scale_bf16_kernel<<<grid_for(n / 8 + 1, kThreads), kThreads>>>(x, n, s);
  check_launch("scale_bf16_kernel");
}

void convert(const float* src, bf16* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  detail::require_aligned(src, "convert", "src");
  detail::require_aligned(dst, "convert", "dst");
  f32_to_bf16_kernel<<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(src, dst, n);
  check_launch("f32_to_bf16_kernel");
}

void convert(const bf16* src, float* dst, int64_t n) {
  if (n <= 0) return;
  detail::require_aligned(src, "convert", "src");
  detail::require_aligned(dst, "convert", "dst");
  bf16_to_f32_kernel<<<grid_for(n / 8 + 1, kThreads), kThreads>>>(src, dst, n);
  check_launch("bf16_to_f32_kernel");
}

void sum_squares_async(const float* x, int64_t n, double* result) {
  if (n <= 0) {
    check(cudaMemsetAsync(result, 0, sizeof(double), 0), "cudaMemsetAsync");
    return;
  }
  detail::require_aligned(x, "sum_squares", "x");
  const unsigned blocks = ssq_blocks(n);
  detail::Scratch<double> partial(blocks);
  sum_squares_partial_kernel<<<blocks, kThreads>>>(x, n, partial.get());
  check_launch("sum_squares_partial_kernel");
  detail::sum_one_block_kernel<<<1, 1024>>>(partial.get(), static_cast<int64_t>(blocks), result);
  check_launch("sum_one_block_kernel (partial sums)");
}

void sum_squares_each(const float* const* x, const int64_t* n, int64_t count, double* host_out) {
  if (count <= 0) return;
  detail::Scratch<double> results(count);
  for (int64_t i = 0; i < count; ++i) sum_squares_async(x[i], n[i], results.get() + i);
  check(cudaMemcpyAsync(host_out, results.get(), static_cast<size_t>(count) * sizeof(double), cudaMemcpyDeviceToHost, 0),
        "sum_squares (read back)");
  check(cudaStreamSynchronize(0), "sum_squares (synchronize)");
}

double sum_squares(const float* x, int64_t n) {
  double host = 0;
  sum_squares_each(&x, &n, 1, &host);
  return host;
}

}  // namespace q2::cuda::ops
