#pragma once
// A prepared data directory:
//   DIR/tokenizer.model            SentencePiece BPE model (data/tokenizer.h)
//   DIR/train_000.bin, ...         the training stream, split every shard_tokens tokens
//   DIR/val.bin                    the held-out validation stream
//   DIR/meta.json                  DatasetMeta (file names relative to DIR) plus provenance
// Each document is stored as [BOS] + its tokens, documents back to back in corpus order. A
// document goes to validation when a hash of its text falls below val_fraction, so the split is
// deterministic and identical documents always land on the same side.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace q2::data {

struct PrepareOptions {
  std::string corpus = "gcide";  // read_corpus spec
  uint32_t vocab = 8192;
  std::string out;
  double val_fraction = 0.005;
  uint64_t max_bytes = 0;  // 0: the whole corpus
  uint64_t shard_tokens = 100'000'000;
  // Non-empty: encode with this SentencePiece model (copied into `out`) instead of training
  // one, e.g. to prepare a large corpus on another machine with the tokenizer trained here.
  std::string tokenizer;
};

struct DatasetMeta {
  uint32_t vocab_size = 0;
  std::string tokenizer;                  // absolute paths
  std::vector<std::string> train_shards;  // in stream order
  std::string val_shard;
  uint64_t train_tokens = 0, val_tokens = 0;  // BOS tokens included
  uint64_t train_bytes = 0, val_bytes = 0;    // UTF-8 bytes the tokens decode to
  double bytes_per_token = 0;                 // over both splits
};

// Reads the corpus, trains the tokenizer on the training documents, encodes both splits and
// writes DIR; `progress` gets one line per finished step (and during encoding).
DatasetMeta prepare(const PrepareOptions& opts, const std::function<void(const std::string&)>& progress);

// Reads DIR/meta.json and checks that the tokenizer and every shard exist, that each shard's
// vocab_size is the dataset's, and that the shards hold the token counts meta.json records.
DatasetMeta load_dataset(const std::string& dir);

}  // namespace q2::data
