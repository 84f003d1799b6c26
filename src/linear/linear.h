#pragma once
// One linear layer under a scheme: Y = X W^T forward; dX = dY W and dW = dY^T X backward.
// Shapes: X [T, in], W [out, in], dY [T, out]. The forward keeps only what the scheme saves
// (for quartet2 the packed NVFP4 X_q and W_q); the backward draws a fresh rotation and fresh
// rounding seeds from its `seed` argument on every call.
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "gemm/operand.h"
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
  Linear(Scheme scheme, const gemm::Backend& backend, std::string name = "linear");

  Matrix forward(const Matrix& x, const Matrix& w, Saved& saved, Trace* trace = nullptr) const;
  Grads backward(const Matrix& dy, const Saved& saved, uint64_t seed, Trace* trace = nullptr) const;

  // The forward-pass operands exactly as the product used them (dequantized).
  gemm::OwnedOperand forward_x(const Matrix& x) const;
  gemm::OwnedOperand forward_w(const Matrix& w) const;

  const Scheme& scheme() const { return scheme_; }

 private:
  gemm::OwnedOperand quantize_forward(FwdQuant q, const Matrix& m, const std::string& what) const;
  gemm::OwnedOperand quantize_backward(BwdQuant q, const Matrix& m, int hadamard, uint64_t rot_seed, uint64_t seed,
                                       const std::string& what, Trace* trace) const;
  void check_backward_shapes(int64_t tokens, int64_t out) const;

  Scheme scheme_;
  const gemm::Backend& backend_;
  std::string name_;
};

}  // namespace q2::linear
