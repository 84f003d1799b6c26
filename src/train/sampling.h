#pragma once
// Text generation from a trained model: temperature and top-k sampling.
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "model/transformer.h"

namespace q2::train {

struct SampleOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 40;        // 0: the whole vocabulary
  uint64_t seed = 0;
  int64_t stop_token = -1;  // >= 0: stop once this token is generated (kept), e.g. BOS, a document boundary
};

// Appends sampled tokens to `prompt` (the context is cut to the model's sequence length), at most
// max_new_tokens, up to and including the stop token if one is set.
std::vector<uint32_t> sample(model::Transformer& model, std::vector<uint32_t> prompt, const SampleOptions& o);

// `ids` as text with each BOS written "<s>": SentencePiece's decode drops it, which would hide where
// a generated document ended and the next began.
std::string text_showing_bos(const data::Tokenizer& tok, const std::vector<uint32_t>& ids);

}  // namespace q2::train
