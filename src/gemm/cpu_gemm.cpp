#include <cblas.h>

#include "common/blas.h"
#include "common/error.h"
#include "gemm/gemm.h"

namespace q2::gemm {

void check_product_shapes(const Operand& a, const Operand& b, const std::string& what) {
  if (a.k() != b.k())
    throw Error(what + ": inner dimensions differ (A is [" + std::to_string(a.rows()) + ", " + std::to_string(a.k()) +
                "], B is [" + std::to_string(b.rows()) + ", " + std::to_string(b.k()) + "])");
}

namespace {

// The operand's values without the tensor scale, and that scale.
const float* unscaled(const Operand& op, Matrix& buf, float& scale) {
  if (op.dense) {
    scale = 1.0f;
    return op.dense->data.data();
  }
  const NVFP4Tensor& t = *op.fp4;
  buf = Matrix(t.rows, t.cols);
  scale = t.tensor_scale;
#pragma omp parallel for
  for (int64_t r = 0; r < t.rows; ++r) t.dequantize_row_unscaled(r, buf.row(r));
  return buf.data.data();
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Matrix product_nt(const Operand& a, const Operand& b, const std::string& what) const override {
    check_product_shapes(a, b, what);
    Matrix abuf, bbuf;
    float ta, tb;
    const float* pa = unscaled(a, abuf, ta);
    const float* pb = unscaled(b, bbuf, tb);
    Matrix d(a.rows(), b.rows());
    if (d.size() == 0 || a.k() == 0) return d;
    const std::lock_guard<std::mutex> lock(blas_lock());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(a.rows()), static_cast<int>(b.rows()),
                static_cast<int>(a.k()), ta * tb, pa, static_cast<int>(a.k()), pb, static_cast<int>(b.k()), 0.0f,
                d.data.data(), static_cast<int>(d.cols));
    return d;
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace q2::gemm
