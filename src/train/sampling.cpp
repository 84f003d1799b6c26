#include "train/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "quant/philox.h"

namespace q2::train {

std::vector<uint32_t> sample(model::Transformer& model, std::vector<uint32_t> tokens, const SampleOptions& o) {
  if (tokens.empty()) throw Error("generate: the prompt encodes to no tokens");
  const int64_t ctx = model.config().seq_len;
  for (int64_t n = 0; n < o.max_new_tokens; ++n) {
    const int64_t len = std::min<int64_t>(ctx, static_cast<int64_t>(tokens.size()));
    const std::vector<uint32_t> window(tokens.end() - len, tokens.end());
    const Matrix logits = model.backend().download(model.logits(window, 1, len));
    const float* z = logits.row(len - 1);
    const int64_t v = logits.cols;
    std::vector<uint32_t> idx(static_cast<size_t>(v));
    std::iota(idx.begin(), idx.end(), 0u);
    if (o.temperature <= 0) {
      tokens.push_back(*std::max_element(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return z[a] < z[b]; }));
      continue;
    }
    const int64_t k = o.top_k > 0 ? std::min(o.top_k, v) : v;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](uint32_t a, uint32_t b) { return z[a] > z[b]; });
    std::vector<double> p(static_cast<size_t>(k));
    double total = 0;
    for (int64_t i = 0; i < k; ++i) total += p[i] = std::exp((z[idx[i]] - z[idx[0]]) / o.temperature);
    const double u = (philox::word(o.seed, philox::kData, static_cast<uint64_t>(n)) + 0.5) * 0x1p-32 * total;
    double acc = 0;
    int64_t pick = k - 1;
    for (int64_t i = 0; i < k; ++i)
      if ((acc += p[i]) >= u) {
        pick = i;
        break;
      }
    tokens.push_back(idx[pick]);
  }
  return tokens;
}

}  // namespace q2::train
