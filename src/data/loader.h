#pragma once
// Batches of token windows streamed from a prepared dataset's split.
//
// The split's shards form one global stream. Each step the stream advances by
// batch*seq*world tokens and rank r reads the window starting at position + r*batch*seq, of
// batch*seq+1 tokens so every input has its next token as target; ranks' inputs are disjoint and
// together are what a single rank with world*batch rows would read. When the next step cannot
// fit before the end of the stream, it wraps to the start and the epoch goes up.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace q2::data {

enum class Split { kTrain, kVal };

struct Batch {
  int64_t batch = 0, seq = 0;
  std::vector<uint32_t> inputs, targets;  // row-major [batch, seq]; targets are inputs shifted by one token
};

class Loader {
 public:
  // Throws if the split has fewer than batch*seq_len*world+1 tokens.
  Loader(const DatasetMeta& meta, Split split, int64_t batch, int64_t seq_len, int rank = 0, int world = 1);

  Batch next();
  uint64_t epoch() const { return epoch_; }

  // The global stream position and epoch: restoring them continues exactly, also under another
  // world size (the ranks then split the same stream differently).
  nlohmann::json state() const;
  void restore(const nlohmann::json& s);  // throws on malformed state or one from another stream

 private:
  void read(uint64_t start, uint64_t count, uint32_t* out);

  std::vector<std::string> shards_;
  std::vector<uint64_t> offsets_;  // first stream index of each shard, then the stream length
  int64_t batch_, seq_;
  int rank_, world_;
  uint64_t position_ = 0, epoch_ = 0;
  size_t cached_ = SIZE_MAX;  // only one shard is held in memory
  std::vector<uint32_t> cache_;
};

}  // namespace q2::data
