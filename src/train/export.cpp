#include "train/export.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file.h"
#include "format/bf16.h"

namespace q2::train {

namespace {

struct Tensor {
  std::string name;
  const float* data;
  int64_t rows, cols;
  bool vector;
};

}  // namespace

void export_safetensors(model::Transformer& model, const std::string& path, bool bf16) {
  const model::ModelConfig& c = model.config();
  std::string inexpressible;
  for (const model::ModelConfig::Extension& e : c.extensions())
    if (!e.llama_format) inexpressible += (inexpressible.empty() ? "" : ", ") + e.option;
  if (!inexpressible.empty())
    throw Error("export: a Llama checkpoint cannot express " + inexpressible + " (model preset '" + c.preset +
                "'); only grouped-query attention, tied embeddings and norms without gains carry over");
  const int64_t d = c.d_model, h = c.d_ff, kv = c.kv_dim();
  std::vector<Tensor> ts;
  std::vector<std::pair<std::string, Matrix>> host;  // downloaded once, kept alive while writing
  for (const model::Param& p : model.params()) host.emplace_back(p.name, model.backend().download(p.value));
  auto find = [&](const std::string& n) -> const Matrix& {
    for (const auto& [name, m] : host)
      if (name == n) return m;
    throw Error("export: parameter '" + n + "' not found");
  };
  const Matrix ones = [&] {  // the gain of a norm without one
    Matrix m(1, d);
    std::fill(m.data.begin(), m.data.end(), 1.0f);
    return m;
  }();
  auto norm = [&](const std::string& n) { return c.norm_weights ? find(n).data.data() : ones.data.data(); };
  ts.push_back({"model.embed_tokens.weight", find("tok_embeddings.weight").data.data(), c.vocab, d, false});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string q = "layers." + std::to_string(l) + ".", hf = "model.layers." + std::to_string(l) + ".";
    const Matrix& qkv = find(q + "attention.wqkv.weight");
    ts.push_back({hf + "self_attn.q_proj.weight", qkv.row(0), d, d, false});
    ts.push_back({hf + "self_attn.k_proj.weight", qkv.row(d), kv, d, false});
    ts.push_back({hf + "self_attn.v_proj.weight", qkv.row(d + kv), kv, d, false});
    ts.push_back({hf + "self_attn.o_proj.weight", find(q + "attention.wo.weight").data.data(), d, d, false});
    const Matrix& w12 = find(q + "feed_forward.w12.weight");
    ts.push_back({hf + "mlp.gate_proj.weight", w12.row(0), h, d, false});
    ts.push_back({hf + "mlp.up_proj.weight", w12.row(h), h, d, false});
    ts.push_back({hf + "mlp.down_proj.weight", find(q + "feed_forward.w3.weight").data.data(), d, h, false});
    ts.push_back({hf + "input_layernorm.weight", norm(q + "attention_norm.weight"), 1, d, true});
    ts.push_back({hf + "post_attention_layernorm.weight", norm(q + "ffn_norm.weight"), 1, d, true});
  }
  ts.push_back({"model.norm.weight", norm("norm.weight"), 1, d, true});
  // A tied head is written out as a copy of the embedding.
  ts.push_back({"lm_head.weight", find(c.tie_embeddings ? "tok_embeddings.weight" : "output.weight").data.data(), c.vocab,
                d, false});

  nlohmann::json header;
  header["__metadata__"] = {{"format", "pt"}, {"quartet2_model", model::to_json(c).dump()}};
  const size_t esize = bf16 ? 2 : 4;
  size_t offset = 0;
  for (const Tensor& t : ts) {
    const size_t n = static_cast<size_t>(t.rows * t.cols) * esize;
    header[t.name] = {{"dtype", bf16 ? "BF16" : "F32"},
                      {"shape", t.vector ? nlohmann::json::array({t.cols}) : nlohmann::json::array({t.rows, t.cols})},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out;
  const uint64_t hl = text.size();
  out.append(reinterpret_cast<const char*>(&hl), 8);
  out += text;
  out.reserve(out.size() + offset);
  for (const Tensor& t : ts)
    for (int64_t i = 0; i < t.rows * t.cols; ++i) {
      if (bf16) {
        const uint16_t b = bf16::encode(t.data[i]);
        out.append(reinterpret_cast<const char*>(&b), 2);
      } else {
        out.append(reinterpret_cast<const char*>(&t.data[i]), 4);
      }
    }
  write_file_atomic(path, out);
}

}  // namespace q2::train
