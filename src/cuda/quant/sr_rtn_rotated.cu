// 9. SR / RTN quantization of rotated transposes and rows (quant/sr.cpp, quant/rtn.cpp applied
// after quant::rht_forward): the backward operands of the nvidia, sr and tetrajet2 schemes.
//
// Design: two passes over the source, the amax of the rotated values and then the 1x16
// quantizer, each with one thread per (column of the source, rotation chunk or 16-group): the
// chunk is loaded down the column and rotated in registers in the CPU's order (see
// transposed_kernel). The source is a BF16 tensor read as itself or as its transpose, or a
// packed NVFP4 tensor decoded to its float32 values.
#include "cuda/quant/device_common.cuh"
#include "cuda/quant/quant.h"

namespace q2::cuda {
namespace detail {
namespace {

struct TransposedArgs {
  int64_t rows, cols;  // of the source S; the output is [cols, rows]
  float val_max, scale_max;
  uint64_t seed;
  uint32_t sign_bits[4];
  float* amax;
  uint2* packed;
  uint8_t* scales;
  float* tensor_scale;
  int64_t tiles_per_row;
};

// One thread per (column c of S, chunk of L rows): the chunk is one rotation (H > 0) or one
// 16-group (H == 0), loaded down the column (for S = x a warp reads 32 consecutive columns),
// rotated in registers in the CPU's order (signs, FWHT stages h = 1, 2, ..., then the norm).
// Pass 1 (Quantize false): atomicMax of |value| into *amax. Pass 2: the 1x16 quantizer.
template <int H, bool Quantize, bool Stochastic, class Src>
__global__ void __launch_bounds__(128) transposed_kernel(TransposedArgs a, Src src) {
  constexpr int L = H > 0 ? H : 16;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * L;
  float v[L];
  if (c < a.cols) {
#pragma unroll
    for (int i = 0; i < L; ++i) v[i] = src(r0 + i, c);
    if (H > 0) {
#pragma unroll
      for (int i = 0; i < L; ++i) v[i] *= (a.sign_bits[i >> 5] >> (i & 31)) & 1u ? -1.0f : 1.0f;
      quant::fwht(v, L);
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

template <int H, class Src>
void launch_transposed(const TransposedArgs& args, const Src& src, bool stochastic, cudaStream_t stream) {
  constexpr int L = H > 0 ? H : 16;
  const dim3 grid(static_cast<unsigned>((args.cols + 127) / 128), static_cast<unsigned>(args.rows / L));
  transposed_kernel<H, false, false><<<grid, 128, 0, stream>>>(args, src);
  check_launch("transposed_kernel (amax)");
  if (stochastic)
    transposed_kernel<H, true, true><<<grid, 128, 0, stream>>>(args, src);
  else
    transposed_kernel<H, true, false><<<grid, 128, 0, stream>>>(args, src);
  check_launch("transposed_kernel (quantize)");
}

// Quantizes RHT(S^T) of the [rows, cols] source into out [cols, rows].
template <class Src>
void quantize_source(const Src& src, int64_t rows, int64_t cols, const std::string& name, const RotatedSrRtn& q,
                     float* amax, DeviceNVFP4& out, cudaStream_t stream) {
  const int chunk = q.hadamard > 0 ? q.hadamard : 16;
  detail::require(q.hadamard == 0 || q.hadamard == 16 || q.hadamard == 32, name,
                  "transposed quantization rotates 16- or 32-point chunks, got " + std::to_string(q.hadamard));
  detail::require(rows > 0 && rows % chunk == 0, name,
                  "transposed quantization needs the quantized dimension a positive multiple of " +
                      std::to_string(chunk) + ", got " + std::to_string(rows));
  detail::require(rows / chunk < 65536, name, "is too large along the quantized dimension for transposed quantization");
  out.ensure(cols, rows);
  TransposedArgs args{rows, cols, 0, 448.0f, q.seed, {}, amax, reinterpret_cast<uint2*>(out.packed.get()),
                      out.scales.get(), out.tensor_scale.get(), (out.scale_cols() + 3) / 4};
  // quant::quantize_sr: val_max = 6 / scale_override; quant::quantize_rtn's default config: 6.
  args.val_max = q.stochastic ? 6.0f / q.sr_scale_override : 6.0f;
  for (int i = 0; i < 4; ++i) args.sign_bits[i] = q.sign_bits[i];
  check(cudaMemsetAsync(amax, 0, sizeof(float), stream), "cudaMemsetAsync (amax)");
  if (q.hadamard == 32)
    launch_transposed<32>(args, src, q.stochastic, stream);
  else if (q.hadamard == 16)
    launch_transposed<16>(args, src, q.stochastic, stream);
  else
    launch_transposed<0>(args, src, q.stochastic, stream);
}

}  // namespace
}  // namespace detail

void quantize_sr_rtn_transposed_async(const BF16View& x, const RotatedSrRtn& q, float* amax, DeviceNVFP4& out,
                                      cudaStream_t stream) {
  detail::quantize_source(detail::Bf16Source{x.data, x.cols, 1}, x.rows, x.cols, x.name, q, amax, out, stream);
}

void quantize_sr_rtn_rows_async(const BF16View& x, const RotatedSrRtn& q, float* amax, DeviceNVFP4& out,
                                cudaStream_t stream) {
  detail::quantize_source(detail::Bf16Source{x.data, 1, x.cols}, x.cols, x.rows, x.name, q, amax, out, stream);
}

void requantize_sr_rtn_transposed_async(const DeviceNVFP4& a, const std::string& name, const RotatedSrRtn& q,
                                        float* amax, DeviceNVFP4& out, cudaStream_t stream) {
  const detail::Nvfp4Source src{a.packed.get(), a.scales.get(), a.tensor_scale.get(), a.cols,
                                (a.scale_cols() + 3) / 4};
  detail::quantize_source(src, a.rows, a.cols, name, q, amax, out, stream);
}

}  // namespace q2::cuda
