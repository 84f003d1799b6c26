#include "train/export.h"

#include <algorithm>
#include <map>
#include <optional>

#include "common/error.h"
#include "common/file.h"
#include "format/bf16.h"
#include "train/nvfp4_export.h"

namespace q2::train {

namespace {

std::string float_bytes(const float* data, int64_t n, bool bf16) {
  std::string out;
  out.reserve(static_cast<size_t>(n) * (bf16 ? 2 : 4));
  for (int64_t i = 0; i < n; ++i) {
    if (bf16) {
      const uint16_t b = bf16::encode(data[i]);
      out.append(reinterpret_cast<const char*>(&b), 2);
    } else {
      out.append(reinterpret_cast<const char*>(&data[i]), 4);
    }
  }
  return out;
}

}  // namespace

void check_llama_expressible(const model::ModelConfig& c) {
  std::string inexpressible;
  for (const model::ModelConfig::Extension& e : c.extensions())
    if (!e.llama_format) inexpressible += (inexpressible.empty() ? "" : ", ") + e.option;
  if (!inexpressible.empty())
    throw Error("export: a Llama checkpoint cannot express " + inexpressible + " (model preset '" + c.preset +
                "'); only grouped-query attention, tied embeddings and norms without gains carry over");
}

std::vector<SafeTensor> llama_tensors(model::Transformer& model, WeightFormat format, const WeightQuantizer& quantize,
                                      const InputScales& input_scales) {
  const model::ModelConfig& c = model.config();
  check_llama_expressible(c);
  if (format == WeightFormat::kNvfp4 && !quantize) throw Error("export: NVFP4 weights need the forward quantizer");
  const int64_t d = c.d_model, h = c.d_ff, kv = c.kv_dim();
  std::map<std::string, Matrix> host;  // downloaded once, kept alive while encoding
  for (const model::Param& p : model.params()) host.emplace(p.name, model.backend().download(p.value));
  auto find = [&](const std::string& n) -> const Matrix& {
    const auto it = host.find(n);
    if (it == host.end()) throw Error("export: parameter '" + n + "' not found");
    return it->second;
  };
  const bool f32 = format == WeightFormat::kF32;
  std::vector<SafeTensor> out;
  auto dense = [&](const std::string& name, const float* data, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    out.push_back({name, f32 ? "F32" : "BF16", std::move(shape), float_bytes(data, n, !f32)});
  };
  // A block linear's weight, or its quantization when exporting NVFP4 (computed on the fused
  // matrix, as the forward pass does, before any split).
  struct Linear {
    const Matrix& w;
    std::optional<NVFP4Tensor> q;
    std::optional<float> input_scale;
  };
  auto linear = [&](const std::string& name) {
    const Matrix& w = find(name);
    if (format != WeightFormat::kNvfp4) return Linear{w, std::nullopt, std::nullopt};
    const auto s = input_scales.find(name);
    return Linear{w, quantize(w, name), s == input_scales.end() ? std::nullopt : std::optional(s->second)};
  };
  // Rows [row0, row0 + rows) of a linear: NVFP4 blocks run along rows, so a split by rows keeps
  // every code and scale, and each part keeps the fused tensor's scale.
  auto rows_of = [&](const std::string& hf, const Linear& l, int64_t row0, int64_t rows) {
    if (l.q) {
      for (SafeTensor& t : modelopt_nvfp4_tensors(hf, *l.q, row0, rows, l.input_scale)) out.push_back(std::move(t));
    } else {
      dense(hf + ".weight", l.w.row(row0), {rows, l.w.cols});
    }
  };
  const std::vector<float> ones(static_cast<size_t>(d), 1.0f);  // the gain of a norm without one
  auto norm = [&](const std::string& hf, const std::string& name) {
    dense(hf, c.norm_weights ? find(name).data.data() : ones.data(), {d});
  };
  dense("model.embed_tokens.weight", find("tok_embeddings.weight").data.data(), {c.vocab, d});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string q = "layers." + std::to_string(l) + ".", hf = "model.layers." + std::to_string(l) + ".";
    const Linear qkv = linear(q + "attention.wqkv.weight");
    rows_of(hf + "self_attn.q_proj", qkv, 0, d);
    rows_of(hf + "self_attn.k_proj", qkv, d, kv);
    rows_of(hf + "self_attn.v_proj", qkv, d + kv, kv);
    rows_of(hf + "self_attn.o_proj", linear(q + "attention.wo.weight"), 0, d);
    const Linear w12 = linear(q + "feed_forward.w12.weight");
    rows_of(hf + "mlp.gate_proj", w12, 0, h);
    rows_of(hf + "mlp.up_proj", w12, h, h);
    rows_of(hf + "mlp.down_proj", linear(q + "feed_forward.w3.weight"), 0, d);
    norm(hf + "input_layernorm.weight", q + "attention_norm.weight");
    norm(hf + "post_attention_layernorm.weight", q + "ffn_norm.weight");
  }
  norm("model.norm.weight", "norm.weight");
  // A tied head is written out as a copy of the embedding.
  dense("lm_head.weight", find(c.tie_embeddings ? "tok_embeddings.weight" : "output.weight").data.data(), {c.vocab, d});
  return out;
}

nlohmann::json export_metadata(const model::ModelConfig& c) {
  return {{"format", "pt"}, {"quartet2_model", model::to_json(c).dump()}};
}

void export_safetensors(model::Transformer& model, const std::string& path, bool bf16) {
  const std::vector<SafeTensor> tensors = llama_tensors(model, bf16 ? WeightFormat::kBf16 : WeightFormat::kF32);
  write_file_atomic(path, safetensors_bytes(tensors, export_metadata(model.config())));
}

}  // namespace q2::train
