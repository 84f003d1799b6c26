#include "train/nvfp4_export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "common/error_test_util.h"
#include "data/shard.h"
#include "data/test_util.h"
#include "format/bf16_matrix.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/distributions.h"
#include "quant/rtn.h"
#include "train/export.h"

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
  const Matrix w_bf16 = bf16::round(w);
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

model::ModelConfig micro() {
  return {.preset = "micro", .n_layers = 2, .d_model = 32, .n_heads = 4, .d_ff = 48, .vocab = 40, .seq_len = 8};
}

// A dataset of only a validation shard of `n` tokens (calibration reads nothing else).
data::DatasetMeta val_only(const data::test::TempDir& dir, int n) {
  std::vector<uint32_t> tokens;
  for (int i = 0; i < n; ++i) tokens.push_back(static_cast<uint32_t>((i * 7 + 3) % 40));
  data::write_shard(dir / "val.bin", tokens, 40);
  data::DatasetMeta d;
  d.vocab_size = 40;
  d.val_shard = dir / "val.bin";
  d.val_tokens = static_cast<uint64_t>(n);
  return d;
}

Matrix param(model::Transformer& m, const std::string& name) {
  for (const model::Param& p : m.params())
    if (p.name == name) return m.backend().download(p.value);
  throw Error("no parameter " + name);
}

// The first block's QKV input is RMSNorm(embedding) with unit gains: its largest magnitude over
// the windows, recomputed in float64, over 6 x 448; every block linear gets a finite positive
// scale; a split shorter than asked is read once.
TEST(Nvfp4Export, CalibratesInputScalesAsTheLargestInputOver2688) {
  const data::test::TempDir dir;
  const data::DatasetMeta data = val_only(dir, 40);  // four windows of 8 (+1) tokens
  const auto backend = model::make_cpu_backend();
  model::Transformer m(micro(), linear::scheme_by_name("quartet2"), *backend);
  m.init(5);
  const InputScales s = calibrate_input_scales(m, data, 3, 8);
  ASSERT_EQ(s.size(), 8u);
  for (const auto& [name, v] : s) EXPECT_TRUE(std::isfinite(v) && v > 0) << name;
  const Matrix emb = param(m, "tok_embeddings.weight");
  double amax = 0;
  for (int i = 0; i < 3 * 8; ++i) {
    const uint32_t t = static_cast<uint32_t>((i * 7 + 3) % 40);
    double ss = 0;
    for (int c = 0; c < 32; ++c) ss += static_cast<double>(emb.at(t, c)) * emb.at(t, c);
    const double r = 1 / std::sqrt(ss / 32 + 1e-5);
    for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(emb.at(t, c) * r));
  }
  EXPECT_NEAR(s.at("layers.0.attention.wqkv.weight") * 2688.0, amax, 1e-5 * amax);
  EXPECT_EQ(calibrate_input_scales(m, data, 100, 8), calibrate_input_scales(m, data, 4, 8));
  EXPECT_NE(calibrate_input_scales(m, data, 4, 8), s);
}

TEST(Nvfp4Export, CalibrationNamesTheLinearWhoseInputIsNotFinite) {
  const data::test::TempDir dir;
  const data::DatasetMeta data = val_only(dir, 40);
  const auto backend = model::make_cpu_backend();
  model::Transformer m(micro(), linear::scheme_by_name("bf16"), *backend);
  m.init(5);
  for (model::Param& p : m.params())
    if (p.name == "tok_embeddings.weight") {
      Matrix e = backend->download(p.value);
      e.at(3, 0) = NAN;  // the first window's first token
      backend->upload(e, p.value);
    }
  EXPECT_EQ(test::error_of([&] { calibrate_input_scales(m, data, 2, 8); }),
            "export: calibration: the input of 'layers.0.attention.wqkv' holds NaN or Inf on validation data");
}

// The fused linears' parts share their input and so its scale; without scales none is written.
TEST(Nvfp4Export, InputScalesGoToEveryPartOfTheirLinear) {
  const auto backend = model::make_cpu_backend();
  model::Transformer m(micro(), linear::scheme_by_name("quartet2"), *backend);
  m.init(6);
  const WeightQuantizer q = forward_weight_quantizer(linear::scheme_by_name("quartet2"), "cpu");
  InputScales scales;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    scales[p + "attention.wqkv.weight"] = 1.0f + l;
    scales[p + "attention.wo.weight"] = 2.0f + l;
    scales[p + "feed_forward.w12.weight"] = 3.0f + l;
    scales[p + "feed_forward.w3.weight"] = 4.0f + l;
  }
  std::map<std::string, float> got;
  for (const SafeTensor& t : llama_tensors(m, WeightFormat::kNvfp4, q, scales))
    if (t.name.size() > 12 && t.name.compare(t.name.size() - 12, 12, ".input_scale") == 0) {
      EXPECT_EQ(t.dtype, "F32");
      EXPECT_TRUE(t.shape.empty());
      std::memcpy(&got[t.name], t.bytes.data(), 4);
    }
  std::map<std::string, float> want;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) want[p + n + ".input_scale"] = 1.0f + l;
    want[p + "self_attn.o_proj.input_scale"] = 2.0f + l;
    for (const char* n : {"mlp.gate_proj", "mlp.up_proj"}) want[p + n + ".input_scale"] = 3.0f + l;
    want[p + "mlp.down_proj.input_scale"] = 4.0f + l;
  }
  EXPECT_EQ(got, want);
  for (const SafeTensor& t : llama_tensors(m, WeightFormat::kNvfp4, q))
    EXPECT_EQ(t.name.find("input_scale"), std::string::npos) << t.name;
}

}  // namespace
}  // namespace q2::train
