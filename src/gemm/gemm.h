#pragma once
// Products of quantized operands: D[M, N] = alpha * sum_k A[m, k] B[n, k], both operands
// K-major ("TN"), each either NVFP4 (alpha takes the tensor-scale product t_A * t_B) or a
// dense float32 matrix (already rounded to BF16 where the scheme says so).
// The exact CPU reference only. The CUDA layer does not implement this interface: its operands
// live on the device, arrive on two streams and keep alpha in device memory, so it multiplies
// through cuda/gemm's cuBLASLt API instead. The two backends meet one level up, where both
// execute the same linear::Plan.
#include <memory>
#include <string>

#include "common/matrix.h"
#include "format/nvfp4.h"

namespace q2::gemm {

struct Operand {
  const NVFP4Tensor* fp4 = nullptr;
  const Matrix* dense = nullptr;

  Operand(const NVFP4Tensor& t) : fp4(&t) {}  // NOLINT: implicit by design
  Operand(const Matrix& m) : dense(&m) {}     // NOLINT
  int64_t rows() const { return fp4 ? fp4->rows : dense->rows; }
  int64_t k() const { return fp4 ? fp4->cols : dense->cols; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // `what` names the product in errors, e.g. "dgrad of layer 3 q".
  virtual Matrix product_nt(const Operand& a, const Operand& b, const std::string& what) const = 0;
};

// Exact: each operand dequantized without its tensor scale (every E2M1 x E4M3 product is
// exact in float32), float32 products accumulated by OpenBLAS sgemm, alpha applied there.
std::unique_ptr<Backend> make_cpu_backend();

void check_product_shapes(const Operand& a, const Operand& b, const std::string& what);

}  // namespace q2::gemm
