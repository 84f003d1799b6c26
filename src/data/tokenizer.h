#pragma once
// SentencePiece BPE tokenizer. Text passes through unchanged (identity normalization, no extra
// whitespace removal, no dummy prefix), so decode(encode(text)) == text for valid UTF-8 and a
// token's bytes are exact; "\n" is one token of its own and bytes outside the vocabulary fall
// back to byte tokens, so nothing is unknown.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace q2::data {

// Trains on the lines of `text_file` (each line one SentencePiece sentence; at most 2,000,000
// sampled) and writes `model_path`. Ids: 0 <unk>, 1 <s> (BOS), 2 "\n", then 256 byte tokens.
void train_tokenizer(const std::string& text_file, uint32_t vocab_size, const std::string& model_path);

class Tokenizer {
 public:
  static Tokenizer load(const std::string& model_path);

  std::vector<uint32_t> encode(const std::string& text) const;  // no BOS added
  std::string decode(const std::vector<uint32_t>& ids) const;
  uint32_t vocab_size() const;
  uint32_t bos_id() const;
  // UTF-8 byte count each token id decodes to on its own (the "▁" meta symbol counts as one space
  // byte, byte-fallback tokens count 1, control tokens 0). Used for bits per byte.
  const std::vector<uint32_t>& byte_lengths() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable once loaded, so copies may share it
};

}  // namespace q2::data
