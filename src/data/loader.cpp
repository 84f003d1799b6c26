#include "data/loader.h"

#include <algorithm>

#include "common/error.h"
#include "data/shard.h"

namespace q2::data {

Loader::Loader(const DatasetMeta& meta, Split split, int64_t batch, int64_t seq_len, int rank, int world)
    : shards_(split == Split::kTrain ? meta.train_shards : std::vector<std::string>{meta.val_shard}),
      batch_(batch),
      seq_(seq_len),
      rank_(rank),
      world_(world) {
  const char* name = split == Split::kTrain ? "train" : "val";
  if (batch <= 0 || seq_len <= 0) throw Error("loader: batch and seq_len must be positive");
  if (world <= 0 || rank < 0 || rank >= world)
    throw Error("loader: rank " + std::to_string(rank) + " is outside world size " + std::to_string(world));
  offsets_.push_back(0);
  for (const auto& s : shards_) {
    const ShardInfo info = read_shard_info(s);
    if (info.vocab_size != meta.vocab_size)
      throw Error("loader: shard '" + s + "' has vocab_size " + std::to_string(info.vocab_size) + ", the dataset " +
                  std::to_string(meta.vocab_size));
    offsets_.push_back(offsets_.back() + info.token_count);
  }
  const uint64_t need = static_cast<uint64_t>(batch) * seq_len * world + 1;
  if (offsets_.back() < need)
    throw Error(std::string("loader: the ") + name + " split has " + std::to_string(offsets_.back()) +
                " tokens, fewer than batch*seq*world+1 = " + std::to_string(need));
}

void Loader::read(uint64_t start, uint64_t count, uint32_t* out) {
  while (count > 0) {
    const size_t k = static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), start) - offsets_.begin()) - 1;
    if (k != cached_) {
      cache_ = read_shard(shards_[k]).tokens;
      cached_ = k;
    }
    const uint64_t from = start - offsets_[k];
    const uint64_t n = std::min(count, offsets_[k + 1] - start);
    std::copy_n(cache_.begin() + static_cast<std::ptrdiff_t>(from), n, out);
    start += n;
    count -= n;
    out += n;
  }
}

Batch Loader::next() {
  const uint64_t rows = static_cast<uint64_t>(batch_) * seq_;
  const uint64_t step = rows * world_;
  if (position_ + step + 1 > offsets_.back()) {
    position_ = 0;
    ++epoch_;
  }
  std::vector<uint32_t> window(rows + 1);
  read(position_ + rank_ * rows, rows + 1, window.data());
  position_ += step;
  Batch b;
  b.batch = batch_;
  b.seq = seq_;
  b.inputs.assign(window.begin(), window.end() - 1);
  b.targets.assign(window.begin() + 1, window.end());
  return b;
}

nlohmann::json Loader::state() const {
  return {{"position", position_}, {"epoch", epoch_}, {"stream_tokens", offsets_.back()}};
}

void Loader::restore(const nlohmann::json& s) {
  auto field = [&](const char* key) {
    if (!s.is_object() || !s.contains(key) || !s[key].is_number_integer() ||
        (!s[key].is_number_unsigned() && s[key].get<int64_t>() < 0))
      throw Error(std::string("loader state: '") + key + "' is missing or not a non-negative integer in " + s.dump());
    return s[key].get<uint64_t>();
  };
  const uint64_t position = field("position"), epoch = field("epoch"), stream = field("stream_tokens");
  if (stream != offsets_.back())
    throw Error("loader state: it is for a stream of " + std::to_string(stream) + " tokens, this split has " +
                std::to_string(offsets_.back()));
  if (position > stream)
    throw Error("loader state: position " + std::to_string(position) + " is past the stream's end");
  position_ = position;
  epoch_ = epoch;
}

}  // namespace q2::data
