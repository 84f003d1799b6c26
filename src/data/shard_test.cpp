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
  EXPECT_EQ(std::filesystem::file_size(dir / "a.bin"), 28 + 2 * small.size());
  const Shard a = read_shard(dir / "a.bin");
  EXPECT_EQ(a.vocab_size, 65536u);
  EXPECT_EQ(a.tokens, small);

  const std::vector<uint32_t> big = {0, 65536, 99999, 3};
  write_shard(dir / "b.bin", big, 100000);
  EXPECT_EQ(std::filesystem::file_size(dir / "b.bin"), 28 + 4 * big.size());
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
  const uint32_t version = 3;
  patch(dir / "s.bin", 4, &version, 4);
  expect_error(dir / "s.bin", "unsupported version 3");
}

TEST(Shard, RejectsTruncatedAndOverlongFiles) {
  test::TempDir dir;
  write_shard(dir / "s.bin", std::vector<uint32_t>(100, 5), 10);
  std::filesystem::resize_file(dir / "s.bin", 28 + 2 * 99);
  expect_error(dir / "s.bin", "truncated");
  EXPECT_THROW(read_shard_info(dir / "s.bin"), Error);
  std::filesystem::resize_file(dir / "s.bin", 28 + 2 * 101);
  expect_error(dir / "s.bin", "bytes after its last token");
  std::filesystem::resize_file(dir / "s.bin", 26);  // inside the checksum
  expect_error(dir / "s.bin", "truncated");
}

TEST(Shard, RejectsTokensOutsideTheVocabulary) {
  test::TempDir dir;
  EXPECT_THROW(write_shard(dir / "w.bin", {1, 10}, 10), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "w.bin"));
  write_shard(dir / "s.bin", {1, 2, 3}, 10);
  const uint16_t bad = 10;
  patch(dir / "s.bin", 28 + 2 * 2, &bad, 2);
  expect_error(dir / "s.bin", "token 10 at index 2 is outside vocab_size 10");
}

TEST(Shard, ChecksumCatchesATokenChangedToAnotherValidId) {
  test::TempDir dir;
  for (const uint32_t vocab : {10u, 100000u}) {  // two and four bytes per token
    write_shard(dir / "s.bin", {1, 2, 3, 4}, vocab);
    const uint32_t width = vocab > 65536 ? 4 : 2, other = 7;
    patch(dir / "s.bin", 28 + width * 1, &other, width);
    expect_error(dir / "s.bin", "checksum mismatch");
    EXPECT_EQ(read_shard_info(dir / "s.bin").token_count, 4u);  // the header alone is still sound
  }
}

// The 24-byte header of version 1, written by hand as builds before the checksum wrote it.
TEST(Shard, ReadsVersionOneWithoutAChecksum) {
  test::TempDir dir;
  const uint32_t header[] = {kShardMagic, 1, 10, 2, 3, 0};  // ..., bytes_per_token 2, uint64 token_count 3
  const uint16_t tokens[] = {9, 0, 5};
  {
    std::ofstream f(dir / "v1.bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(header), sizeof header);
    f.write(reinterpret_cast<const char*>(tokens), sizeof tokens);
  }
  const Shard s = read_shard(dir / "v1.bin");
  EXPECT_EQ(s.vocab_size, 10u);
  EXPECT_EQ(s.tokens, (std::vector<uint32_t>{9, 0, 5}));
  EXPECT_EQ(read_shard_info(dir / "v1.bin").token_count, 3u);
  std::filesystem::resize_file(dir / "v1.bin", 24 + 2 * 2);
  expect_error(dir / "v1.bin", "truncated: header says 3 tokens, file holds 2");
}

}  // namespace
}  // namespace q2::data
