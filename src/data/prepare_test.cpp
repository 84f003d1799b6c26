#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/error.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data/test_util.h"
#include "data/tokenizer.h"

namespace q2::data {
namespace {

namespace fs = std::filesystem;

// The documents of a split: its stream cut before each BOS.
std::vector<std::vector<uint32_t>> documents(const std::vector<std::string>& shards, uint32_t bos) {
  std::vector<uint32_t> stream;
  for (const auto& s : shards) {
    const auto t = read_shard(s).tokens;
    stream.insert(stream.end(), t.begin(), t.end());
  }
  EXPECT_TRUE(!stream.empty() && stream.front() == bos);
  std::vector<std::vector<uint32_t>> docs;
  for (const uint32_t t : stream) {
    if (t == bos) docs.emplace_back();
    else docs.back().push_back(t);
  }
  return docs;
}

void expect_error(const std::string& dir, const std::string& fragment) {
  try {
    load_dataset(dir);
    FAIL() << "load_dataset accepted " << dir;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

class PrepareTest : public ::testing::Test {
 protected:
  // 400 documents, each of the first 100 twice: duplicates must not straddle the split.
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    corpus_ = test::make_documents(400, 7);
    for (int i = 0; i < 100; ++i) corpus_.push_back(corpus_[i]);
    std::ofstream f(*dir_ / "corpus.txt");
    for (const auto& d : corpus_) f << d << "\n\n";
    f.close();
    PrepareOptions o;
    o.corpus = *dir_ / "corpus.txt";
    o.vocab = 400;
    o.out = *dir_ / "data";
    o.val_fraction = 0.1;
    o.shard_tokens = 2000;
    meta_ = new DatasetMeta(prepare(o, [](const std::string& line) { progress_.push_back(line); }));
  }
  static void TearDownTestSuite() {
    delete meta_;
    delete dir_;
  }
  static test::TempDir* dir_;
  static std::vector<std::string> corpus_;
  static DatasetMeta* meta_;
  static std::vector<std::string> progress_;
};
test::TempDir* PrepareTest::dir_ = nullptr;
std::vector<std::string> PrepareTest::corpus_;
DatasetMeta* PrepareTest::meta_ = nullptr;
std::vector<std::string> PrepareTest::progress_;

TEST_F(PrepareTest, SplitsDocumentsDisjointlyAndLosslessly) {
  const Tokenizer tok = Tokenizer::load(meta_->tokenizer);
  const auto train = documents(meta_->train_shards, tok.bos_id());
  const auto val = documents({meta_->val_shard}, tok.bos_id());
  EXPECT_EQ(train.size() + val.size(), corpus_.size());
  EXPECT_GT(val.size(), 0u);
  EXPECT_LT(val.size(), corpus_.size() / 4);
  const std::set<std::vector<uint32_t>> train_set(train.begin(), train.end());
  for (const auto& v : val) EXPECT_EQ(train_set.count(v), 0u) << "a validation document is also in train";

  // Decoding both splits gives back the corpus, and the bytes the tokens decode to are its bytes.
  std::vector<std::string> decoded, expected = corpus_;
  uint64_t train_bytes = 0, val_bytes = 0;
  for (const auto& d : train) decoded.push_back(tok.decode(d)), train_bytes += decoded.back().size();
  for (const auto& d : val) decoded.push_back(tok.decode(d)), val_bytes += decoded.back().size();
  std::sort(decoded.begin(), decoded.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(decoded, expected);
  EXPECT_EQ(meta_->train_bytes, train_bytes);
  EXPECT_EQ(meta_->val_bytes, val_bytes);
}

// The training stream follows a fixed shuffled order, not the corpus order.
TEST_F(PrepareTest, TrainDocumentsAreShuffledDeterministically) {
  const Tokenizer tok = Tokenizer::load(meta_->tokenizer);
  const auto train = documents(meta_->train_shards, tok.bos_id());
  std::vector<size_t> rank;  // corpus position of each training document, in stream order
  for (const auto& d : train) {
    const std::string text = tok.decode(d);
    rank.push_back(static_cast<size_t>(std::find(corpus_.begin(), corpus_.end(), text) - corpus_.begin()));
  }
  size_t ascending = 0;
  for (size_t i = 1; i < rank.size(); ++i) ascending += rank[i] > rank[i - 1];
  // In corpus order nearly every step ascends; a random order ascends about half the time.
  EXPECT_GT(ascending, rank.size() / 3);
  EXPECT_LT(ascending, rank.size() * 2 / 3);
}

TEST_F(PrepareTest, ReusesAGivenTokenizer) {
  PrepareOptions o;
  o.corpus = *dir_ / "corpus.txt";
  o.out = *dir_ / "again";
  o.val_fraction = 0.1;
  o.tokenizer = meta_->tokenizer;
  o.vocab = 123;  // ignored: the given model decides
  const DatasetMeta again = prepare(o, [](const std::string&) {});
  EXPECT_EQ(again.vocab_size, meta_->vocab_size);
  EXPECT_EQ(again.train_tokens, meta_->train_tokens);  // same documents, same encoding
  o.tokenizer = *dir_ / "missing.model";
  o.out = *dir_ / "third";
  EXPECT_THROW(prepare(o, [](const std::string&) {}), Error);
}

TEST_F(PrepareTest, MetaMatchesTheShardsAndRoundTrips) {
  EXPECT_EQ(meta_->vocab_size, 400u);
  ASSERT_GT(meta_->train_shards.size(), 1u);  // 2000-token shards
  uint64_t train_tokens = 0;
  for (size_t k = 0; k < meta_->train_shards.size(); ++k) {
    const ShardInfo info = read_shard_info(meta_->train_shards[k]);
    EXPECT_EQ(info.vocab_size, 400u);
    if (k + 1 < meta_->train_shards.size()) {
      EXPECT_EQ(info.token_count, 2000u);
    }
    train_tokens += info.token_count;
  }
  EXPECT_EQ(meta_->train_tokens, train_tokens);
  EXPECT_EQ(meta_->val_tokens, read_shard_info(meta_->val_shard).token_count);
  EXPECT_DOUBLE_EQ(meta_->bytes_per_token, static_cast<double>(meta_->train_bytes + meta_->val_bytes) /
                                               static_cast<double>(meta_->train_tokens + meta_->val_tokens));
  EXPECT_TRUE(fs::path(meta_->tokenizer).is_absolute());
  EXPECT_FALSE(fs::exists(*dir_ / "data/tokenizer_train.txt"));

  const DatasetMeta m = load_dataset(*dir_ / "data");
  EXPECT_EQ(m.vocab_size, meta_->vocab_size);
  EXPECT_EQ(m.tokenizer, meta_->tokenizer);
  EXPECT_EQ(m.train_shards, meta_->train_shards);
  EXPECT_EQ(m.val_shard, meta_->val_shard);
  EXPECT_EQ(m.train_tokens, meta_->train_tokens);
  EXPECT_EQ(m.val_tokens, meta_->val_tokens);
  EXPECT_EQ(m.train_bytes, meta_->train_bytes);
  EXPECT_EQ(m.val_bytes, meta_->val_bytes);
  EXPECT_EQ(m.bytes_per_token, meta_->bytes_per_token);
  EXPECT_GE(progress_.size(), 4u);
}

TEST_F(PrepareTest, LoadRejectsBrokenDirectories) {
  const std::string good = *dir_ / "data";
  expect_error(*dir_ / "nowhere", "no meta.json");
  auto copy = [&](const std::string& name) {
    const std::string d = *dir_ / name;
    fs::copy(good, d, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    return d;
  };
  const std::string corrupt = copy("corrupt");
  std::ofstream(corrupt + "/meta.json") << "{\"format\": \"quartet2-dataset\", \"version\": 1, \"vocab_si";
  expect_error(corrupt, "corrupt");
  std::ofstream(corrupt + "/meta.json") << "{\"format\": \"quartet2-dataset\", \"version\": 1}";
  expect_error(corrupt, "corrupt");

  const std::string missing = copy("missing");
  fs::remove(missing + "/train_001.bin");
  expect_error(missing, "train_001.bin");

  const std::string vocab = copy("vocab");
  write_shard(vocab + "/val.bin", read_shard(vocab + "/val.bin").tokens, 512);
  expect_error(vocab, "vocab_size 512");

  const std::string tokenizer = copy("tokenizer");
  train_tokenizer(*dir_ / "corpus.txt", 380, tokenizer + "/tokenizer.model");
  expect_error(tokenizer, "vocab_size is 400, but tokenizer '" + tokenizer + "/tokenizer.model' has 380 tokens");
  std::ofstream(tokenizer + "/tokenizer.model") << "not a model";
  expect_error(tokenizer, tokenizer + "/tokenizer.model");

  const std::string count = copy("count");
  write_shard(count + "/val.bin", {1, 5, 6}, 400);
  expect_error(count, "val shards hold 3 tokens");

  // Counts that are not whole numbers in range (a float, a negative number) are named, not cast.
  const std::string numbers = copy("numbers");
  std::ifstream in(good + "/meta.json");
  nlohmann::json meta = nlohmann::json::parse(in);
  for (const auto& [key, value] : {std::pair<const char*, nlohmann::json>{"vocab_size", 1e10}, {"vocab_size", -400},
                                   {"train_tokens", 1.5}, {"val_bytes", -1}}) {
    nlohmann::json m = meta;
    m[key] = value;
    std::ofstream(numbers + "/meta.json") << m.dump();
    expect_error(numbers, std::string(key) + " must be a whole number from 0 to ");
  }
}

TEST(Prepare, RejectsBadOptions) {
  test::TempDir dir;
  std::ofstream(dir / "c.txt") << "Hello.\n";
  PrepareOptions o;
  o.corpus = dir / "c.txt";
  o.out = dir / "out";
  o.val_fraction = 0;
  EXPECT_THROW(prepare(o, [](const std::string&) {}), Error);
  o.val_fraction = 0.5;
  o.corpus = dir / "none.txt";
  EXPECT_THROW(prepare(o, [](const std::string&) {}), Error);
  o.corpus = dir / "c.txt";  // one document cannot fill both splits
  EXPECT_THROW(prepare(o, [](const std::string&) {}), Error);
}

}  // namespace
}  // namespace q2::data
