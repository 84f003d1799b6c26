#pragma once
// One linear layer under a scheme, the CPU reference executor of its Plan (linear/plan.h):
// Y = X W^T forward; dX = dY W and dW = dY^T X backward. Shapes: X [T, in], W [out, in],
// dY [T, out]. The forward keeps only what the plan saves (for quartet2 the packed NVFP4 X_q
// and W_q); the backward draws a fresh rotation and fresh rounding seeds from its `seed`
// argument on every call (the plan's seed streams).
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "gemm/operand.h"
#include "linear/plan.h"
#include "linear/scheme.h"

namespace q2::linear {

// What the forward pass keeps for the backward pass.
struct Saved {
  gemm::OwnedOperand x, w;
  size_t bytes() const { return x.bytes() + w.bytes(); }
};

struct Grads {
  Matrix dx, dw;
};

// Records, in order, which quantizer each operand got and what was saved (tests read it).
using Trace = std::vector<std::string>;

class Linear {
 public:
  // Throws q2::Error naming the scheme when make_plan rejects it.
  Linear(Scheme scheme, const gemm::Backend& backend, std::string name = "linear");

  Matrix forward(const Matrix& x, const Matrix& w, Saved& saved, Trace* trace = nullptr) const;
  Grads backward(const Matrix& dy, const Saved& saved, uint64_t seed, Trace* trace = nullptr) const;

  // The forward-pass operands exactly as the product used them (dequantized).
  gemm::OwnedOperand forward_x(const Matrix& x) const;
  gemm::OwnedOperand forward_w(const Matrix& w) const;
  // dY as backward reads it: rounded to BF16 unless the plan keeps dY exact.
  Matrix backward_dy(const Matrix& dy) const;
  // A backward operand exactly as backward() uses it, from `e` (backward_dy), what the forward
  // saved and the call's seed.
  gemm::OwnedOperand backward_operand(const BackwardOperand& o, const Matrix& e, const Saved& saved, uint64_t seed,
                                      Trace* trace = nullptr) const;
  // What a backward operand is made from, before rotation and rounding: dY (`e`), or the
  // transpose of dY or of what the forward saved (not for kForward).
  Matrix backward_source(const BackwardOperand& o, const Matrix& e, const Saved& saved) const;
  // The operand's rotation and quantizer applied to that source.
  gemm::OwnedOperand quantize_backward(const BackwardOperand& o, const Matrix& m, uint64_t seed,
                                       Trace* trace = nullptr) const;

  const Scheme& scheme() const { return scheme_; }
  const Plan& plan() const { return plan_; }

 private:
  gemm::OwnedOperand quantize_forward(FwdQuant q, const Matrix& m, const std::string& what) const;

  Scheme scheme_;
  Plan plan_;
  const gemm::Backend& backend_;
  std::string name_;
};

}  // namespace q2::linear
