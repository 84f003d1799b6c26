#pragma once
// A scheme turned into what a linear layer executes: per operand of its three products the
// quantizer, the rotation and its size, the named seed stream and the source tensor; what the
// forward pass keeps for the backward pass; how token rows are padded; and the scheme's
// validation. Both backends (linear::Linear on the CPU, cuda::CudaLinear) execute a Plan; the
// decisions live here only.
//
// The products: Y = X W^T (forward), dX = dY (W^T)^T (dgrad: A = dY, B = W^T) and
// dW = (dY^T) (X^T)^T (wgrad: A = dY^T, B = X^T), every operand quantized along the product's
// inner dimension.
#include <cstdint>
#include <string>

#include "linear/scheme.h"
#include "quant/seeds.h"

namespace q2::linear {

// The six GEMM operands of a layer.
enum class OperandId { kFwdX, kFwdW, kDgradA, kDgradB, kWgradA, kWgradB };

// The tensor a backward operand is made from: dY, or what the forward pass kept of W or X.
enum class Source { kDy, kSavedW, kSavedX };

// The format of what the forward pass keeps of X or W.
enum class Kept { kNvfp4, kBf16, kFp32 };

struct BackwardOperand {
  OperandId id = OperandId::kDgradA;
  BwdQuant quant = BwdQuant::kBf16;
  Source source = Source::kDy;
  bool transposed = false;  // the source's transpose (dgrad's A is dY itself)
  // Randomized Hadamard size along the inner dimension (0: none), with the signs of the call's
  // LinearStream::kRotation seed: one rotation for all four operands, so it cancels in products.
  int hadamard = 0;
  seeds::LinearStream rounding = seeds::LinearStream::kDgradA;  // the stochastic quantizers' seed
  double eden_fallback = 0;  // MS-EDEN only: quant::MsEdenConfig::eden_fallback
  int hadamard_rounds = 1;   // 2: rotated first with LinearStream::kRotation2's signs (Scheme)

  // Rounded to NVFP4 (not BF16, not FP32; kForward reuses the forward W_q, or W when unquantized).
  bool quantized() const { return quant != BwdQuant::kBf16 && quant != BwdQuant::kFp32; }
  uint64_t rounding_seed(uint64_t call_seed) const { return seeds::linear_stream(call_seed, rounding); }
};

struct ProductPlan {
  BackwardOperand a, b;
  int hadamard = 0;  // the rotation size of its rotated operands (0: none)
  // The inner dimension's size must be a multiple of this: the rotation size, 16 (NVFP4 blocks)
  // when an operand is quantized, else 1.
  int64_t inner_multiple = 1;
  // > 0: the outlier split's share (Scheme::outlier_split), in chunks of `hadamard`; wgrad only.
  double outlier_split = 0;
};

struct Plan {
  std::string scheme;
  FwdQuant x = FwdQuant::kBf16, w = FwdQuant::kBf16;
  // What the forward pass keeps: the forward operand itself, except that an X kept from the
  // input (nvidia's high-precision X) is X rounded to BF16, not the quantized X_q.
  Kept saved_x = Kept::kBf16, saved_w = Kept::kBf16;
  bool saved_x_from_input = false;
  bool exact_dy = false;  // dY is used as given (fp32), not rounded to BF16
  ProductPlan dgrad, wgrad;
  // Token rows are padded with zero rows to a multiple of this (wgrad quantizes along tokens).
  int64_t row_multiple = 1;
  float sr_scale_override = 1;

  int64_t padded_rows(int64_t rows) const { return (rows + row_multiple - 1) / row_multiple * row_multiple; }
  // Throws q2::Error naming the layer, the product and the dimension that does not divide.
  void check_backward_shapes(const std::string& layer, int64_t tokens, int64_t out) const;
};

// Throws q2::Error naming the scheme when its recipe is inconsistent (MS-EDEN without a
// rotation, a rotated or misplaced reuse of the forward W, an eden_fallback outside [0, 1) or
// without MS-EDEN operands, hadamard_rounds other than 1 or 2, or 2 without a rotation, an
// outlier_split outside [0.5, 1) or on a wgrad whose operands are not both MS-EDEN).
Plan make_plan(const Scheme& scheme);

// "fwd.x", "dgrad.a(dY)", ... as traces and errors name the operands.
const char* to_string(OperandId id);
const char* to_string(Kept k);

}  // namespace q2::linear
