#pragma once
// A GEMM operand that owns its data: NVFP4, or dense float32 (BF16-rounded values).
#include <optional>

#include "gemm/gemm.h"

namespace q2::gemm {

struct OwnedOperand {
  std::optional<NVFP4Tensor> fp4;
  Matrix dense;

  static OwnedOperand of(NVFP4Tensor t) { return OwnedOperand{std::move(t), {}}; }
  static OwnedOperand of(Matrix m) { return OwnedOperand{std::nullopt, std::move(m)}; }
  Operand view() const { return fp4 ? Operand(*fp4) : Operand(dense); }
  Matrix values() const { return fp4 ? fp4->dequantize() : dense; }  // what the product sees
  size_t bytes() const { return fp4 ? fp4->bytes() : dense.data.size() * 2; }  // dense counted as BF16
  int64_t rows() const { return fp4 ? fp4->rows : dense.rows; }
  int64_t cols() const { return fp4 ? fp4->cols : dense.cols; }
};

}  // namespace q2::gemm
