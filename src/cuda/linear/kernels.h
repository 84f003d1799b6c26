#pragma once
// Small kernels of the CUDA linear layer (all asynchronous on `stream`).
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "cuda/runtime/format.h"

namespace q2::cuda::linear_kernels {

// The RTN family's quantizers (quant/rtn.cpp, quant/sr.cpp) applied to the float32 rotated
// transpose RHT_n(x^T) of a BF16 x [rows, cols]: out is [cols, rows], each row rotated in
// chunks of `hadamard` (16 or 32; 0: no rotation) and quantized in 1x16 blocks, exactly as the
// CPU quantizes quant::rht_forward(transpose(x)). Two passes (amax of the rotated values, then
// quantization); `amax` is one device float of scratch. rows % max(16, hadamard) == 0.
struct TransposedQuant {
  bool stochastic = false;      // SR (quantize_sr) instead of RTN (quantize_rtn, default config)
  float sr_scale_override = 1;  // SR only
  uint64_t seed = 0;            // SR only
  int hadamard = 0;
  uint32_t sign_bits[4] = {0, 0, 0, 0};  // quant::Rht::sign_bits of the rotation
};
void quantize_transposed(const BF16View& x, const TransposedQuant& q, float* amax, DeviceNVFP4& out,
                         cudaStream_t stream = 0);

// The same quantizers applied to RHT_n(x) along x's own rows: out is [x.rows, x.cols], as the
// CPU quantizes quant::rht_forward(x). x.cols % max(16, hadamard) == 0. The kernel reads x as
// the transpose of x^T (strided loads): a comparison baseline's path, not tuned.
void quantize_rows(const BF16View& x, const TransposedQuant& q, float* amax, DeviceNVFP4& out,
                   cudaStream_t stream = 0);

// quantize_transposed of the float32 values of a saved NVFP4 tensor a, e2m1 * e4m3 * t left
// to right (NVFP4Tensor::dequantize, NOT rounded to BF16), decoded from the packed tensor.
void requantize_transposed(const DeviceNVFP4& a, const std::string& name, const TransposedQuant& q, float* amax,
                           DeviceNVFP4& out, cudaStream_t stream = 0);

}  // namespace q2::cuda::linear_kernels
