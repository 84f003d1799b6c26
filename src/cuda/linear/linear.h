#pragma once
// The CUDA linear layer (model::LinearOp on device tensors), the GPU executor of a
// linear::Plan, as linear::Linear is the CPU one: x BF16 [M, K], w the float32 master weight
// [N, K]; forward returns y BF16 [M, N]; backward takes dy BF16 [M, N], returns dx BF16 [M, K]
// and accumulates dw (float32) +=.
//
// NVFP4 products are emulated exactly on GPUs without FP4 tensor cores: each operand is
// quantized by the src/cuda kernels (bit-exact with the CPU reference, with the plan's seed
// streams and rotation), expanded to BF16 without its tensor scale (exact), and
// multiplied by a BF16 cuBLASLt GEMM with float32 accumulation and alpha = t_a * t_b read from
// device memory. With `native` (Blackwell's FP4 tensor cores, gemm.h) a product of two NVFP4
// operands quantized along K goes straight to the FP4 GEMM instead; the others (BF16 operands,
// nvidia's W_q used transposed) stay emulated. The weight is quantized from bf16(w)
// (docs/NUMERICS.md, "GPU linear layer").
// Token rows are padded with zero rows to the plan's row multiple, as on the CPU backend.
// Saved for backward: X_q and W_q (packed NVFP4) for quantized schemes; for bf16 (and nvidia's
// high-precision X) the dense BF16 X, kept by reference when no padding is needed, so the
// caller must not modify x between forward(keep) and backward (as with autograd).
// Work is ordered on stream 0 (a side stream overlaps some quantizations within each call and
// joins before it returns); scratch (scratch.h) is shared by all layers and kept between calls,
// so a training step allocates nothing once every shape has been seen.
#include <memory>
#include <string>

#include "cuda/runtime/format.h"
#include "linear/plan.h"
#include "linear/scheme.h"
#include "model/backend.h"

namespace q2::cuda {

class CudaLinear : public model::LinearOp {
 public:
  // The quantized operands of the last forward/backward, for tests (null when the scheme does
  // not quantize that operand). Backward operands live in scratch shared by layers of the same
  // shape: read them before another layer runs. dgrad.b of a scheme that reuses the forward W
  // is the forward W_q itself (stored [N, K]; the CPU uses its 16x16-block transpose).
  virtual const DeviceNVFP4* quantized(linear::OperandId which) const = 0;
  // forward and backward writing y and dx straight into the caller's device memory (which must
  // not overlap the inputs); a null dx skips the dgrad product.
  virtual void forward_into(const model::Tensor& x, const model::Tensor& w, bool keep, void* y) = 0;
  virtual void backward_into(const model::Tensor& dy, uint64_t seed, model::Tensor& dw, void* dx) = 0;
};

// Throws q2::Error naming the scheme when the CUDA layer cannot run it (e.g. fp32).
std::unique_ptr<CudaLinear> make_cuda_linear(const linear::Scheme& scheme, const std::string& name,
                                             bool native = false);

}  // namespace q2::cuda
