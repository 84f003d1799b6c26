#include "cuda/linear/kernels.h"

#include "cuda/device_common.cuh"

namespace q2::cuda::linear_kernels {

namespace {

using detail::FastDiv;

constexpr int kThreads = 256;

int blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, int64_t{1} << 20)));
}

__global__ void f32_to_bf16_kernel(const float4* __restrict__ in, uint2* __restrict__ out, int64_t n4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) {
    const float4 v = __ldg(in + i);
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    out[i] = make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
  }
}

__global__ void f32_to_bf16_tail_kernel(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t from,
                                        int64_t n) {
  const int64_t i = from + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

// One thread per 16-group: an 8-byte code load, one scale byte, two 16-byte BF16 stores.
__global__ void __launch_bounds__(kThreads) dequant_unscaled_kernel(const uint2* __restrict__ packed,
                                                                     const uint8_t* __restrict__ scales,
                                                                     int64_t groups, FastDiv groups_per_row,
                                                                     int64_t tiles_per_row, uint4* __restrict__ out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = e2m1::decode(static_cast<uint8_t>(threadIdx.x));
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; gid < groups; gid += stride) {
    const uint2 p = __ldg(packed + gid);
    const uint32_t row = groups_per_row.div(static_cast<uint32_t>(gid));
    const uint32_t k = static_cast<uint32_t>(gid) - row * groups_per_row.d;
    const float s = e4m3::decode(__ldg(scales + detail::blocked_offset(row, k, tiles_per_row)));
    uint32_t w[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t bits = j < 4 ? p.x >> (8 * j) : p.y >> (8 * (j - 4));
      const __nv_bfloat162 pair = __floats2bfloat162_rn(lut[bits & 0xFu] * s, lut[(bits >> 4) & 0xFu] * s);
      w[j] = *reinterpret_cast<const uint32_t*>(&pair);
    }
    out[2 * gid] = make_uint4(w[0], w[1], w[2], w[3]);
    out[2 * gid + 1] = make_uint4(w[4], w[5], w[6], w[7]);
  }
}

__global__ void scale_product_kernel(const float* a, const float* b, float* out) {
  *out = (a ? *a : 1.0f) * (b ? *b : 1.0f);
}

struct TransposedArgs {
  const __nv_bfloat16* x;
  int64_t rows, cols;
  float val_max, scale_max;
  uint64_t seed;
  uint32_t sign_bits[4];
  float* amax;
  uint2* packed;
  uint8_t* scales;
  float* tensor_scale;
  int64_t tiles_per_row;
};

// One thread per (column c of x, chunk of L rows): the chunk is one rotation (H > 0) or one
// 16-group (H == 0), loaded down the column (a warp reads 32 consecutive columns), rotated in
// registers in the CPU's order (signs, FWHT stages h = 1, 2, ..., then the norm).
// Pass 1 (Quantize false): atomicMax of |value| into *amax. Pass 2: the 1x16 quantizer.
template <int H, bool Quantize, bool Stochastic>
__global__ void __launch_bounds__(128) transposed_kernel(TransposedArgs a) {
  constexpr int L = H > 0 ? H : 16;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * L;
  float v[L];
  if (c < a.cols) {
#pragma unroll
    for (int i = 0; i < L; ++i) v[i] = __bfloat162float(a.x[(r0 + i) * a.cols + c]);
    if (H > 0) {
#pragma unroll
      for (int i = 0; i < L; ++i) v[i] *= (a.sign_bits[i >> 5] >> (i & 31)) & 1u ? -1.0f : 1.0f;
      fwht(v, L);
      const float norm = quant::rht_norm(L);
#pragma unroll
      for (int i = 0; i < L; ++i) v[i] *= norm;
    }
  }
  if (!Quantize) {
    float m = 0.0f;
    if (c < a.cols) {
#pragma unroll
      for (int i = 0; i < L; ++i) m = detail::ref_max(m, fabsf(v[i]));
    }
    m = detail::warp_max(m);
    if ((threadIdx.x & 31) == 0) atomicMax(reinterpret_cast<unsigned int*>(a.amax), __float_as_uint(m));
    return;
  }
  const float t = detail::tensor_scale(*a.amax, a.scale_max, a.val_max);
  if (c == 0 && r0 == 0) *a.tensor_scale = t;
  if (c >= a.cols) return;
#pragma unroll
  for (int g = 0; g < L / 16; ++g) {
    const float* x = v + 16 * g;
    float g_max = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) g_max = detail::ref_max(g_max, fabsf(x[i]));
    const uint8_t s = e4m3::encode_rne((g_max / a.val_max) / t);
    const float denom = e4m3::decode(s) * t;
    const int64_t base = c * a.rows + r0 + 16 * g;  // element index in the [cols, rows] output
    uint32_t codes[16];
#pragma unroll
    for (int i = 0; i < 16; i += 4) {
      philox::Block w{};
      if (Stochastic) w = philox::words4(a.seed, philox::kElementSR, static_cast<uint64_t>(base + i) >> 2);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        codes[i + j] = denom == 0.0f ? 0u
                       : Stochastic  ? e2m1::encode_sr(x[i + j] / denom, w.v[j])
                                     : e2m1::encode_rne(x[i + j] / denom);
    }
    a.packed[base / 16] = detail::pack16(codes);
    a.scales[detail::blocked_offset(c, (r0 + 16 * g) / 16, a.tiles_per_row)] = s;
  }
}

template <int H>
void launch_transposed(const TransposedArgs& args, bool stochastic) {
  constexpr int L = H > 0 ? H : 16;
  const dim3 grid(static_cast<unsigned>((args.cols + 127) / 128), static_cast<unsigned>(args.rows / L));
  transposed_kernel<H, false, false><<<grid, 128>>>(args);
  check_launch("transposed_kernel (amax)");
  if (stochastic)
    transposed_kernel<H, true, true><<<grid, 128>>>(args);
  else
    transposed_kernel<H, true, false><<<grid, 128>>>(args);
  check_launch("transposed_kernel (quantize)");
}

}  // namespace

void f32_to_bf16(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t n4 = n / 4;
  if (n4 > 0) {
    f32_to_bf16_kernel<<<blocks_for(n4), kThreads>>>(reinterpret_cast<const float4*>(in), reinterpret_cast<uint2*>(out), n4);
    check_launch("f32_to_bf16_kernel");
  }
  if (n % 4 != 0) {
    f32_to_bf16_tail_kernel<<<1, 4>>>(in, out, n4 * 4, n);
    check_launch("f32_to_bf16_tail_kernel");
  }
}

void dequantize_unscaled(const DeviceNVFP4& a, __nv_bfloat16* out) {
  const int64_t g = a.scale_cols(), groups = a.rows * g;
  detail::require(groups < (int64_t{1} << 31), "NVFP4 input", "has 2^31 or more 16-groups (too large)");
  dequant_unscaled_kernel<<<blocks_for(groups), kThreads>>>(reinterpret_cast<const uint2*>(a.packed.get()),
                                                            a.scales.get(), groups, FastDiv(static_cast<uint32_t>(g)),
                                                            (g + 3) / 4, reinterpret_cast<uint4*>(out));
  check_launch("dequant_unscaled_kernel");
}

void scale_product(const float* a, const float* b, float* out) {
  scale_product_kernel<<<1, 1>>>(a, b, out);
  check_launch("scale_product_kernel");
}

void quantize_transposed(const BF16View& x, const TransposedQuant& q, float* amax, DeviceNVFP4& out) {
  const int chunk = q.hadamard > 0 ? q.hadamard : 16;
  detail::require(q.hadamard == 0 || q.hadamard == 16 || q.hadamard == 32, x.name,
                  "transposed quantization rotates 16- or 32-point chunks, got " + std::to_string(q.hadamard));
  detail::require(x.rows > 0 && x.rows % chunk == 0, x.name,
                  "transposed quantization needs rows a positive multiple of " + std::to_string(chunk) + ", got " +
                      std::to_string(x.rows));
  detail::require(x.rows / chunk < 65536, x.name, "has too many rows for transposed quantization");
  out.ensure(x.cols, x.rows);
  TransposedArgs args{x.data, x.rows, x.cols, 0, 448.0f, q.seed, {}, amax,
                      reinterpret_cast<uint2*>(out.packed.get()), out.scales.get(), out.tensor_scale.get(),
                      (out.scale_cols() + 3) / 4};
  // quant::quantize_sr: val_max = 6 / scale_override; quant::quantize_rtn's default config: 6.
  args.val_max = q.stochastic ? 6.0f / q.sr_scale_override : 6.0f;
  for (int i = 0; i < 4; ++i) args.sign_bits[i] = q.sign_bits[i];
  check(cudaMemsetAsync(amax, 0, sizeof(float), 0), "cudaMemsetAsync (amax)");
  if (q.hadamard == 32)
    launch_transposed<32>(args, q.stochastic);
  else if (q.hadamard == 16)
    launch_transposed<16>(args, q.stochastic);
  else
    launch_transposed<0>(args, q.stochastic);
}

}  // namespace q2::cuda::linear_kernels
