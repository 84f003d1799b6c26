#include "train/nvfp4_export.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/error_test_util.h"
#include "format/bf16.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/rtn.h"

namespace q2::train {
namespace {

void expect_same(const NVFP4Tensor& a, const NVFP4Tensor& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.tensor_scale, b.tensor_scale);
}

// The forward pass's W quantizer of each scheme (spec section 7): Four-over-Six for quartet2, RTN
// for quartet2_no46; on CUDA of the BF16-rounded master weight.
TEST(Nvfp4Export, QuantizesWAsTheSchemesForwardPassOnItsDevice) {
  const Matrix w = quant::random_matrix(48, 64, quant::Dist::kGaussian, 7, 0.02);
  Matrix w_bf16 = w;
  for (float& v : w_bf16.data) v = bf16::round(v);
  expect_same(forward_weight_quantizer(linear::scheme_by_name("quartet2"), "cpu")(w, "w"),
              quant::quantize_four_over_six(MatrixRef(w, "w")));
  expect_same(forward_weight_quantizer(linear::scheme_by_name("quartet2_no46"), "cpu")(w, "w"),
              quant::quantize_rtn(MatrixRef(w, "w")));
  expect_same(forward_weight_quantizer(linear::scheme_by_name("quartet2"), "cuda")(w, "w"),
              quant::quantize_four_over_six(MatrixRef(w_bf16, "w")));
}

TEST(Nvfp4Export, RefusesASchemeWhoseForwardKeepsWInHighPrecision) {
  EXPECT_EQ(test::error_of([] { forward_weight_quantizer(linear::scheme_by_name("bf16"), "cpu"); }),
            "export --format nvfp4: scheme 'bf16' keeps W in bf16 in its forward pass, so there are no NVFP4 "
            "weights to export (use --format hf)");
}

// ModelOpt's layout decoded by hand: byte j of a row holds column 2j in its low nibble and 2j + 1
// in its high one, one E4M3 scale per 16 columns, the float32 tensor scale apart.
TEST(Nvfp4Export, ModelOptTensorsOfRowsDecodeToThoseRowsValues) {
  const Matrix w = quant::random_matrix(48, 64, quant::Dist::kLaplace, 3, 0.05);
  const NVFP4Tensor q = quant::quantize_four_over_six(MatrixRef(w, "w"));
  const Matrix values = q.dequantize();
  const int64_t row0 = 16, rows = 24;
  const std::vector<SafeTensor> t = modelopt_nvfp4_tensors("model.layers.0.self_attn.k_proj", q, row0, rows);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(t[0].dtype, "U8");
  EXPECT_EQ(t[0].shape, (std::vector<int64_t>{rows, 32}));
  EXPECT_EQ(t[1].name, "model.layers.0.self_attn.k_proj.weight_scale");
  EXPECT_EQ(t[1].dtype, "F8_E4M3");
  EXPECT_EQ(t[1].shape, (std::vector<int64_t>{rows, 4}));
  EXPECT_EQ(t[2].name, "model.layers.0.self_attn.k_proj.weight_scale_2");
  EXPECT_EQ(t[2].dtype, "F32");
  EXPECT_TRUE(t[2].shape.empty());
  float scale2 = 0;
  std::memcpy(&scale2, t[2].bytes.data(), 4);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < 64; ++c) {
      const uint8_t byte = static_cast<uint8_t>(t[0].bytes[static_cast<size_t>(r * 32 + c / 2)]);
      const uint8_t code = c % 2 == 0 ? byte & 0xF : byte >> 4;
      const uint8_t scale = static_cast<uint8_t>(t[1].bytes[static_cast<size_t>(r * 4 + c / 16)]);
      ASSERT_EQ(e2m1::decode(code) * e4m3::decode(scale) * scale2, values.at(row0 + r, c)) << r << ", " << c;
    }
  EXPECT_NE(test::error_of([&] { modelopt_nvfp4_tensors("x", q, 40, 9); }).find("outside its 48 rows"),
            std::string::npos);
}

}  // namespace
}  // namespace q2::train
