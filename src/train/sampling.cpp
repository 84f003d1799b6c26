#include "train/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "quant/philox.h"

namespace q2::train {

namespace {

uint32_t greedy(const float* z, const std::vector<uint32_t>& idx) {
  return *std::max_element(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return z[a] < z[b]; });
}

// Draw `n` of the seed's stream, by temperature among the top-k of the logits `z`.
uint32_t draw(const float* z, std::vector<uint32_t>& idx, const SampleOptions& o, int64_t n) {
  const int64_t v = static_cast<int64_t>(idx.size());
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, v) : v;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](uint32_t a, uint32_t b) { return z[a] > z[b]; });
  std::vector<double> p(static_cast<size_t>(k));
  double total = 0;
  for (int64_t i = 0; i < k; ++i) total += p[i] = std::exp((z[idx[i]] - z[idx[0]]) / o.temperature);
  const double u = (philox::word(o.seed, philox::kData, static_cast<uint64_t>(n)) + 0.5) * 0x1p-32 * total;
  double acc = 0;
  for (int64_t i = 0; i < k; ++i)
    if ((acc += p[i]) >= u) return idx[i];
  return idx[k - 1];
}

}  // namespace

std::vector<uint32_t> sample(model::Transformer& model, std::vector<uint32_t> tokens, const SampleOptions& o) {
  if (tokens.empty()) throw Error("generate: the prompt encodes to no tokens");
  const int64_t ctx = model.config().seq_len;
  for (int64_t n = 0; n < o.max_new_tokens; ++n) {
    const int64_t len = std::min<int64_t>(ctx, static_cast<int64_t>(tokens.size()));
    const std::vector<uint32_t> window(tokens.end() - len, tokens.end());
    const Matrix logits = model.backend().download(model.logits(window, 1, len));
    std::vector<uint32_t> idx(static_cast<size_t>(logits.cols));
    std::iota(idx.begin(), idx.end(), 0u);
    const float* z = logits.row(len - 1);
    const uint32_t next = o.temperature <= 0 ? greedy(z, idx) : draw(z, idx, o, n);
    tokens.push_back(next);
    if (o.stop_token >= 0 && next == static_cast<uint64_t>(o.stop_token)) break;
  }
  return tokens;
}

std::string text_showing_bos(const data::Tokenizer& tok, const std::vector<uint32_t>& ids) {
  std::string text;
  std::vector<uint32_t> run;  // the tokens since the last BOS, decoded together
  for (uint32_t id : ids) {
    if (id != tok.bos_id()) {
      run.push_back(id);
      continue;
    }
    text += tok.decode(run) + "<s>";
    run.clear();
  }
  return text + tok.decode(run);
}

}  // namespace q2::train
