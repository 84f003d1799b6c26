#include "train/nvfp4_export.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "common/error.h"
#include "data/loader.h"
#include "format/bf16_matrix.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "linear/linear.h"

namespace q2::train {

WeightQuantizer forward_weight_quantizer(const linear::Scheme& scheme, const std::string& device) {
  if (scheme.w != linear::FwdQuant::kRtn && scheme.w != linear::FwdQuant::kFourOverSix &&
      scheme.w != linear::FwdQuant::kRtn16x16)
    throw Error("export --format nvfp4: scheme '" + scheme.name + "' keeps W in " + linear::to_string(scheme.w) +
                " in its forward pass, so there are no NVFP4 weights to export (use --format hf)");
  std::shared_ptr<const gemm::Backend> gemm = gemm::make_cpu_backend();
  const bool from_bf16 = device == "cuda";
  return [scheme, gemm, from_bf16](const Matrix& w, const std::string& name) {
    const linear::Linear layer(scheme, *gemm, name);  // the forward's own quantizer, not a copy of it
    gemm::OwnedOperand q = from_bf16 ? layer.forward_w(bf16::round(w)) : layer.forward_w(w);
    if (!q.fp4) throw Error("export --format nvfp4: the forward pass of '" + name + "' did not give an NVFP4 W");
    return std::move(*q.fp4);
  };
}

std::vector<SafeTensor> modelopt_nvfp4_tensors(const std::string& prefix, const NVFP4Tensor& q, int64_t row0,
                                               int64_t rows, std::optional<float> input_scale) {
  if (row0 < 0 || rows < 0 || row0 + rows > q.rows)
    throw Error("export: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) + ") of '" + prefix +
                "' are outside its " + std::to_string(q.rows) + " rows");
  const int64_t packed_cols = q.cols / 2, scale_cols = q.scale_cols();
  auto slice = [&](const std::vector<uint8_t>& v, int64_t cols) {
    return std::string(reinterpret_cast<const char*>(v.data()) + row0 * cols, static_cast<size_t>(rows * cols));
  };
  auto scalar = [](const float& v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  std::vector<SafeTensor> out = {{prefix + ".weight", "U8", {rows, packed_cols}, slice(q.packed, packed_cols)},
                                 {prefix + ".weight_scale", "F8_E4M3", {rows, scale_cols}, slice(q.scales, scale_cols)},
                                 {prefix + ".weight_scale_2", "F32", {}, scalar(q.tensor_scale)}};
  if (input_scale) out.push_back({prefix + ".input_scale", "F32", {}, scalar(*input_scale)});
  return out;
}

InputScales calibrate_input_scales(model::Transformer& model, const data::DatasetMeta& data, int64_t windows,
                                   int64_t seq) {
  InputScales amax;
  model.set_tap(
      [&](const std::string& name, const model::Tensor& t) {
        if (name.size() < 2 || name.compare(name.size() - 2, 2, ".x") != 0) return;
        const Matrix x = model.backend().download(t);
        float m = 0;
        for (float v : x.data) m = std::isnan(v) ? v : std::max(m, std::fabs(v));
        const std::string linear = name.substr(0, name.size() - 2);
        if (!std::isfinite(m))
          throw Error("export: calibration: the input of '" + linear + "' holds NaN or Inf on validation data");
        float& slot = amax[linear + ".weight"];
        slot = std::max(slot, m);
      },
      true);
  data::Loader loader(data, data::Split::kVal, 1, seq);
  try {
    for (int64_t i = 0; i < windows; ++i) {
      const data::Batch b = loader.next();
      if (i > 0 && loader.epoch() > 0) break;  // the split is smaller than asked: each window once
      model.logits(b.inputs, 1, seq);
    }
  } catch (...) {
    model.set_tap(nullptr);
    throw;
  }
  model.set_tap(nullptr);
  for (auto& [name, a] : amax) a /= static_cast<float>(e2m1::kMax * e4m3::kMax);
  return amax;
}

nlohmann::json modelopt_quantization() {
  return {{"quant_algo", "NVFP4"}, {"kv_cache_quant_algo", nullptr}, {"group_size", kBlock},
          {"exclude_modules", {"lm_head"}}};
}

}  // namespace q2::train
