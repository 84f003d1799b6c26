#include "model/linear_schemes.h"

#include <algorithm>

#include "common/error.h"

namespace q2::model {

std::array<std::string, kBlockLinears> block_linear_names(const ModelConfig& c) {
  // The SwiGLU MLP's fused gate|up is w12, the ReLU^2 MLP's single up projection w1.
  return {"attention.wqkv", "attention.wo", c.mlp == "swiglu" ? "feed_forward.w12" : "feed_forward.w1",
          "feed_forward.w3"};
}

void validate(const PrecisionOverrides& o, const ModelConfig& c) {
  const std::string layers = std::to_string(c.n_layers);
  for (const auto& [key, n] : {std::pair{"method.bf16_first_layers", o.bf16_first_layers},
                               std::pair{"method.bf16_last_layers", o.bf16_last_layers}})
    if (n < 0 || n > c.n_layers)
      throw Error("config: " + std::string(key) + " must be in [0, model.n_layers = " + layers + "], got " +
                  std::to_string(n));
  const auto names = block_linear_names(c);
  for (const std::string& name : o.bf16_linears) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      throw Error("config: method.bf16_linears names '" + name + "', which the model's blocks do not have; they have " +
                  names[0] + ", " + names[1] + ", " + names[2] + " and " + names[3]);
    if (std::count(o.bf16_linears.begin(), o.bf16_linears.end(), name) > 1)
      throw Error("config: method.bf16_linears names '" + name + "' twice");
  }
}

std::vector<linear::Scheme> linear_schemes(const ModelConfig& c, const linear::Scheme& scheme,
                                           const PrecisionOverrides& o) {
  validate(o, c);
  const linear::Scheme bf16 = linear::scheme_by_name("bf16");
  const auto names = block_linear_names(c);
  std::vector<linear::Scheme> schemes;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const bool whole_block = l < o.bf16_first_layers || l >= c.n_layers - o.bf16_last_layers;
    for (const std::string& name : names) {
      const bool chosen = std::find(o.bf16_linears.begin(), o.bf16_linears.end(), name) != o.bf16_linears.end();
      schemes.push_back(whole_block || chosen ? bf16 : scheme);
    }
  }
  return schemes;
}

std::string describe_linear_schemes(const ModelConfig& c, const std::vector<linear::Scheme>& schemes) {
  const auto names = block_linear_names(c);
  auto layer_text = [&](int64_t l) {
    const auto first = schemes.begin() + l * kBlockLinears, last = first + kBlockLinears;
    if (std::all_of(first, last, [&](const linear::Scheme& s) { return s.name == first->name; })) return first->name;
    std::string t;
    for (int w = 0; w < kBlockLinears; ++w) t += (w ? ", " : "") + names[w] + " " + first[w].name;
    return t;
  };
  std::string out;
  for (int64_t l = 0; l < c.n_layers;) {
    const std::string text = layer_text(l);
    int64_t end = l + 1;
    while (end < c.n_layers && layer_text(end) == text) ++end;
    if (!out.empty()) out += '\n';
    out += end - l == 1 ? "layer " : "layers ";
    out += std::to_string(l);
    if (end - l > 1) out.append("-").append(std::to_string(end - 1));
    out.append(": ").append(text);
    l = end;
  }
  return out;
}

}  // namespace q2::model
