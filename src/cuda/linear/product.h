#pragma once
// One GEMM of the CUDA linear layer from its two operands, however each was produced: dense
// BF16, or NVFP4 expanded to BF16 (emulation) or fed to Blackwell's FP4 tensor cores.
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "cuda/gemm/gemm.h"
#include "cuda/linear/scratch.h"

namespace q2::cuda {

// A GEMM operand: dense BF16 `data`, or the NVFP4 tensor `q`, produced on `stream`, with
// `data` its BF16 expansion when its quantizer wrote one, else product() expands it into
// scratch `slot`; stored with the inner dimension contiguous ([rows, K]) or not ([K, rows]).
// `linked`: its quantizer takes part in the product's alpha (AlphaLink).
struct Operand {
  const __nv_bfloat16* data = nullptr;
  bool k_major = true;
  const DeviceNVFP4* q = nullptr;
  Slot slot = kDeqA;
  cudaStream_t stream = 0;
  bool linked = false;
};

// Whether a product runs on FP4 tensor cores: `native` allowed and both operands NVFP4 along K;
// otherwise its NVFP4 operands are expanded to BF16.
inline bool native_product(bool native, bool a_fp4_along_k, bool b_fp4_along_k) {
  return native && a_fp4_along_k && b_fp4_along_k;
}

struct Product {
  int64_t m = 0, n = 0, k = 0;
  void* d = nullptr;
  blas::OutType out = blas::OutType::kBF16;
  bool accumulate = false;
  AlphaSlot alpha = kFwdAlpha;
  bool native = false;  // NVFP4 x NVFP4 along K may use FP4 tensor cores
};

// D[m, n] (+)= alpha sum_k A[m, k] B[n, k] on stream 0, alpha = t_a * t_b (from the operands'
// quantizers when they are linked, else computed here). When emulating, NVFP4 operands that
// their quantizer did not expand are expanded on the stream that made them; stream 0 then
// joins the side stream. `layer` names the layer in errors.
void product(const Operand& a, const Operand& b, const Product& p, const std::string& layer);

}  // namespace q2::cuda
