#include "data/shard.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/test_util.h"

namespace q2::data {
namespace {

// Overwrites bytes of `path` at `offset`, keeping the rest.
void patch(const std::string& path, std::streamoff offset, const void* bytes, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
}

void expect_error(const std::string& path, const std::string& fragment) {
  try {
    read_shard(path);
    FAIL() << "read_shard accepted " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Shard, RoundTripsWithTwoAndFourBytesPerToken) {
  test::TempDir dir;
  const std::vector<uint32_t> small = {0, 1, 65535, 7, 300};
  write_shard(dir / "a.bin", small, 65536);
  EXPECT_EQ(std::filesystem::file_size(dir / "a.bin"), 24 + 2 * small.size());
  const Shard a = read_shard(dir / "a.bin");
  EXPECT_EQ(a.vocab_size, 65536u);
  EXPECT_EQ(a.tokens, small);

  const std::vector<uint32_t> big = {0, 65536, 99999, 3};
  write_shard(dir / "b.bin", big, 100000);
  EXPECT_EQ(std::filesystem::file_size(dir / "b.bin"), 24 + 4 * big.size());
  const Shard b = read_shard(dir / "b.bin");
  EXPECT_EQ(b.vocab_size, 100000u);
  EXPECT_EQ(b.tokens, big);
  const ShardInfo info = read_shard_info(dir / "b.bin");
  EXPECT_EQ(info.vocab_size, 100000u);
  EXPECT_EQ(info.token_count, big.size());

  write_shard(dir / "empty.bin", {}, 10);
  EXPECT_TRUE(read_shard(dir / "empty.bin").tokens.empty());
}

TEST(Shard, RejectsMissingFile) {
  test::TempDir dir;
  expect_error(dir / "nope.bin", "cannot open");
}

TEST(Shard, RejectsWrongMagic) {
  test::TempDir dir;
  std::ofstream(dir / "text.bin") << "this is plain text, not a token shard at all";
  expect_error(dir / "text.bin", "not a quartet2 token shard");
  std::ofstream(dir / "short.bin") << "Q2";
  expect_error(dir / "short.bin", "not a quartet2 token shard");
}

TEST(Shard, RejectsUnsupportedVersion) {
  test::TempDir dir;
  write_shard(dir / "s.bin", {1, 2, 3}, 10);
  const uint32_t version = 2;
  patch(dir / "s.bin", 4, &version, 4);
  expect_error(dir / "s.bin", "unsupported version 2");
}

TEST(Shard, RejectsTruncatedAndOverlongFiles) {
  test::TempDir dir;
  write_shard(dir / "s.bin", std::vector<uint32_t>(100, 5), 10);
  std::filesystem::resize_file(dir / "s.bin", 24 + 2 * 99);
  expect_error(dir / "s.bin", "truncated");
  EXPECT_THROW(read_shard_info(dir / "s.bin"), Error);
  std::filesystem::resize_file(dir / "s.bin", 24 + 2 * 101);
  expect_error(dir / "s.bin", "bytes after its last token");
}

TEST(Shard, RejectsTokensOutsideTheVocabulary) {
  test::TempDir dir;
  EXPECT_THROW(write_shard(dir / "w.bin", {1, 10}, 10), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "w.bin"));
  write_shard(dir / "s.bin", {1, 2, 3}, 10);
  const uint16_t bad = 10;
  patch(dir / "s.bin", 24 + 2 * 2, &bad, 2);
  expect_error(dir / "s.bin", "token 10 at index 2 is outside vocab_size 10");
}

}  // namespace
}  // namespace q2::data
