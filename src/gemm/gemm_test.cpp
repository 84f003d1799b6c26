#include "gemm/gemm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "quant/distributions.h"
#include "quant/ms_eden.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::gemm {
namespace {

// Float64 product of the dequantized operands (exact values: codes x scales x tensor scale).
std::vector<double> reference(const Matrix& a, const Matrix& b) {
  std::vector<double> out(a.rows * b.rows, 0.0);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < b.rows; ++j) {
      double s = 0;
      for (int64_t k = 0; k < a.cols; ++k) s += static_cast<double>(a.at(i, k)) * b.at(j, k);
      out[i * b.rows + j] = s;
    }
  return out;
}

double rel_err(const Matrix& d, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) num += std::pow(d.data[i] - ref[i], 2), den += ref[i] * ref[i];
  return std::sqrt(num / den);
}

TEST(CpuGemm, NVFP4ProductEqualsFloat64OfDequantizedOperands) {
  const auto backend = make_cpu_backend();
  // Non-square shapes; K = 48 and 80 are multiples of 16 but not of 128.
  const int64_t shapes[][3] = {{37, 48, 29}, {128, 256, 64}, {5, 80, 300}, {64, 1024, 96}};
  uint64_t seed = 1;
  for (const auto& s : shapes) {
    const Matrix x = quant::random_matrix(s[0], s[1], quant::Dist::kGaussian, seed++);
    const Matrix w = quant::random_matrix(s[2], s[1], quant::Dist::kStudent3, seed++);
    const NVFP4Tensor xq = quant::quantize_four_over_six(MatrixRef(x, "x"));
    const NVFP4Tensor wq = quant::quantize_sr(MatrixRef(w, "w"), quant::kSrScaleOverride, 3);
    const Matrix d = backend->product_nt(xq, wq, "test");
    ASSERT_EQ(d.rows, s[0]);
    ASSERT_EQ(d.cols, s[2]);
    EXPECT_LT(rel_err(d, reference(xq.dequantize(), wq.dequantize())), 1e-6) << s[0] << "x" << s[1] << "x" << s[2];
    // Mixed operand kinds: NVFP4 times dense.
    EXPECT_LT(rel_err(backend->product_nt(xq, w, "mixed"), reference(xq.dequantize(), w)), 1e-6);
  }
}

TEST(CpuGemm, RejectsMismatchedInnerDimensions) {
  const auto backend = make_cpu_backend();
  const Matrix a(4, 32), b(4, 48);
  try {
    backend->product_nt(a, b, "dgrad of layer 'q'");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dgrad of layer 'q'"), std::string::npos);
  }
}

TEST(CpuGemm, SchemesNeedingRotationRejectKNotAMultipleOf128) {
  const Matrix e(4, 80);
  EXPECT_THROW(quant::quantize_ms_eden(MatrixRef(e, "dY"), quant::Rht(128, 0), 0), Error);
}

}  // namespace
}  // namespace q2::gemm
