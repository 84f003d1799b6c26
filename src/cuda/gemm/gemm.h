#pragma once
// BF16 GEMMs through cuBLASLt, row-major:
//   D[M, N] = alpha * op(A) * op(B) (+ D when accumulating),
// op(A) [M, K] (A stored [M, K], or [K, M] when trans_a), op(B) [K, N] (B stored [K, N], or
// [N, K] when trans_b), float32 accumulation (CUBLAS_COMPUTE_32F), D BF16 or float32.
// alpha is a host float or a device pointer (read by the GEMM on the device, so a tensor-scale
// product computed by an earlier kernel needs no synchronization). Everything runs on the
// legacy default stream (stream 0), like the rest of the CUDA backend. One cuBLASLt handle and
// one 32 MiB workspace per process; descriptors and the chosen algorithm are cached per shape.
//
// NVFP4 GEMMs on the FP4 tensor cores of Blackwell (sm_100a, sm_120a): cuBLASLt with E2M1
// operands and one E4M3 scale per 16 along K (CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3), read
// in the 128x4 blocked layout that DeviceNVFP4 keeps. Compiled everywhere, usable only where
// has_native_nvfp4(); elsewhere the linear layer emulates the same product (quant.h,
// dequantize_unscaled_async + matmul).
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/runtime/format.h"

namespace q2::cuda::blas {

enum class OutType { kBF16, kF32 };

struct Alpha {
  float host = 1.0f;
  const float* device = nullptr;  // when set, the GEMM reads alpha from here
};

struct Matmul {
  const __nv_bfloat16* a = nullptr;
  bool trans_a = false;
  const __nv_bfloat16* b = nullptr;
  bool trans_b = false;
  void* d = nullptr;
  OutType d_type = OutType::kBF16;
  int64_t m = 0, n = 0, k = 0;
  Alpha alpha;
  bool accumulate = false;  // D += alpha op(A) op(B)
};

// Asynchronous on stream 0. Throws q2::Error on a cuBLASLt failure or an empty shape.
void matmul(const Matmul& p);

// D[M, N] = alpha * A B^T (+ D when accumulating): the first M rows of A [>= M, K] and the first
// N rows of B [>= N, K], both quantized along K; alpha (device) = t_a * t_b
// (tensor_scale_product_async).
struct Nvfp4Matmul {
  const DeviceNVFP4* a = nullptr;
  const DeviceNVFP4* b = nullptr;
  int64_t m = 0, n = 0, k = 0;
  void* d = nullptr;
  OutType d_type = OutType::kBF16;
  const float* alpha = nullptr;
  bool accumulate = false;
};

// Whether the current device has FP4 tensor cores (compute capability 10.x or 12.x).
bool has_native_nvfp4();
// Asynchronous on stream 0. Throws q2::Error on a GPU without FP4 tensor cores, mismatched
// shapes or a cuBLASLt failure.
void nvfp4_matmul(const Nvfp4Matmul& p);

}  // namespace q2::cuda::blas
