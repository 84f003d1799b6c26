#include "data/loader.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "common/error.h"
#include "data/shard.h"
#include "data/test_util.h"

namespace q2::data {
namespace {

// Shards whose tokens are their own stream positions (0, 1, 2, ... across shard boundaries),
// so every window shows where it was read from.
DatasetMeta identity_dataset(const test::TempDir& dir, const std::vector<uint32_t>& train_sizes, uint32_t val_size) {
  DatasetMeta m;
  m.vocab_size = 100000;
  uint32_t next = 0;
  for (size_t k = 0; k < train_sizes.size(); ++k) {
    std::vector<uint32_t> t(train_sizes[k]);
    std::iota(t.begin(), t.end(), next);
    next += train_sizes[k];
    m.train_shards.push_back(dir / ("train_" + std::to_string(k) + ".bin"));
    write_shard(m.train_shards.back(), t, m.vocab_size);
    m.train_tokens += t.size();
  }
  std::vector<uint32_t> v(val_size);
  std::iota(v.begin(), v.end(), 50000u);
  m.val_shard = dir / "val.bin";
  write_shard(m.val_shard, v, m.vocab_size);
  m.val_tokens = val_size;
  return m;
}

std::vector<uint32_t> range(uint32_t start, uint32_t n) {
  std::vector<uint32_t> r(n);
  std::iota(r.begin(), r.end(), start);
  return r;
}

TEST(Loader, TargetsAreInputsShiftedByOneAcrossShards) {
  test::TempDir dir;
  const DatasetMeta m = identity_dataset(dir, {100, 37, 250}, 64);
  Loader l(m, Split::kTrain, 2, 25, 0, 1);
  for (uint32_t step = 0; step < 7; ++step) {
    const Batch b = l.next();
    EXPECT_EQ(b.batch, 2);
    EXPECT_EQ(b.seq, 25);
    EXPECT_EQ(b.inputs, range(50 * step, 50));
    EXPECT_EQ(b.targets, range(50 * step + 1, 50));
  }
  Loader v(m, Split::kVal, 1, 8);
  EXPECT_EQ(v.next().inputs, range(50000, 8));
}

TEST(Loader, WrapsAndCountsEpochs) {
  test::TempDir dir;
  const DatasetMeta m = identity_dataset(dir, {100, 37, 250}, 64);
  Loader l(m, Split::kTrain, 2, 25);
  // 387 tokens: windows of 51 start at 0, 50, ..., 300; the eighth would end past the stream.
  for (int step = 0; step < 7; ++step) l.next();
  EXPECT_EQ(l.epoch(), 0u);
  EXPECT_EQ(l.next().inputs.front(), 0u);
  EXPECT_EQ(l.epoch(), 1u);
  EXPECT_EQ(l.next().inputs.front(), 50u);
}

TEST(Loader, RanksSplitTheSingleRankStream) {
  test::TempDir dir;
  const DatasetMeta m = identity_dataset(dir, {100, 37, 250}, 64);
  const int world = 3;
  Loader single(m, Split::kTrain, 2 * world, 5);
  std::vector<Loader> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(m, Split::kTrain, 2, 5, r, world);
  for (int step = 0; step < 20; ++step) {  // 12 steps per epoch: crosses a wrap
    const Batch all = single.next();
    std::vector<uint32_t> inputs, targets;
    std::set<uint32_t> seen;
    for (auto& l : ranks) {
      const Batch b = l.next();
      inputs.insert(inputs.end(), b.inputs.begin(), b.inputs.end());
      targets.insert(targets.end(), b.targets.begin(), b.targets.end());
      seen.insert(b.inputs.begin(), b.inputs.end());
      EXPECT_EQ(l.epoch(), single.epoch());
    }
    EXPECT_EQ(seen.size(), inputs.size()) << "ranks' inputs overlap";
    EXPECT_EQ(inputs, all.inputs);
    EXPECT_EQ(targets, all.targets);
  }
  EXPECT_EQ(single.epoch(), 1u);
}

TEST(Loader, RestoreContinuesExactlyUnderAnyWorldSize) {
  test::TempDir dir;
  const DatasetMeta m = identity_dataset(dir, {100, 37, 250}, 64);
  Loader a(m, Split::kTrain, 4, 10);
  for (int i = 0; i < 11; ++i) a.next();  // into the second epoch
  const nlohmann::json s = nlohmann::json::parse(a.state().dump());

  Loader b(m, Split::kTrain, 4, 10);
  b.restore(s);
  Loader r0(m, Split::kTrain, 2, 10, 0, 2), r1(m, Split::kTrain, 2, 10, 1, 2);
  r0.restore(s);
  r1.restore(s);
  for (int i = 0; i < 12; ++i) {
    const Batch x = a.next();
    EXPECT_EQ(b.next().inputs, x.inputs);
    std::vector<uint32_t> split = r0.next().inputs;
    const Batch y = r1.next();
    split.insert(split.end(), y.inputs.begin(), y.inputs.end());
    EXPECT_EQ(split, x.inputs);
    EXPECT_EQ(b.epoch(), a.epoch());
    EXPECT_EQ(r1.epoch(), a.epoch());
  }
  EXPECT_EQ(a.epoch(), 2u);
}

TEST(Loader, RejectsBadStateAndShortSplits) {
  test::TempDir dir;
  const DatasetMeta m = identity_dataset(dir, {100, 37, 250}, 64);
  Loader l(m, Split::kTrain, 2, 5);
  EXPECT_THROW(l.restore(nlohmann::json::array()), Error);
  EXPECT_THROW(l.restore({{"position", 5}, {"epoch", 0}}), Error);
  EXPECT_THROW(l.restore({{"position", -5}, {"epoch", 0}, {"stream_tokens", 387}}), Error);
  EXPECT_THROW(l.restore({{"position", "5"}, {"epoch", 0}, {"stream_tokens", 387}}), Error);
  EXPECT_THROW(l.restore({{"position", 5}, {"epoch", 0}, {"stream_tokens", 388}}), Error);
  EXPECT_THROW(l.restore({{"position", 400}, {"epoch", 0}, {"stream_tokens", 387}}), Error);
  l.restore({{"position", 5}, {"epoch", 3}, {"stream_tokens", 387}});
  EXPECT_EQ(l.next().inputs.front(), 5u);
  EXPECT_EQ(l.epoch(), 3u);

  EXPECT_THROW(Loader(m, Split::kVal, 1, 64), Error);  // needs 65 tokens
  EXPECT_NO_THROW(Loader(m, Split::kVal, 1, 63));
  EXPECT_THROW(Loader(m, Split::kTrain, 2, 65, 0, 3), Error);  // 391 > 387 tokens
  EXPECT_NO_THROW(Loader(m, Split::kTrain, 2, 64, 0, 3));
  EXPECT_THROW(Loader(m, Split::kTrain, 1, 5, 2, 2), Error);
}

}  // namespace
}  // namespace q2::data
