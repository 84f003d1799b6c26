#include "data/shard.h"

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file.h"

namespace q2::data {

static_assert(std::endian::native == std::endian::little, "shards are read and written as little-endian memory");

namespace {

constexpr size_t kHeaderBytes = 24;

uint32_t bytes_per_token(uint32_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Opens `path` and validates its header against the file's size; leaves `in` after the header.
ShardInfo open_shard(const std::string& path, std::ifstream& in, uint32_t& width) {
  in.open(path, std::ios::binary);
  if (!in) throw Error("token shard '" + path + "': cannot open (missing or unreadable)");
  char h[kHeaderBytes];
  if (!in.read(h, kHeaderBytes))
    throw Error("token shard '" + path + "': not a quartet2 token shard (shorter than its 24-byte header)");
  if (get<uint32_t>(h) != kShardMagic) throw Error("token shard '" + path + "': not a quartet2 token shard (bad magic)");
  const uint32_t version = get<uint32_t>(h + 4);
  if (version != kShardVersion)
    throw Error("token shard '" + path + "': unsupported version " + std::to_string(version) + " (this build reads " +
                std::to_string(kShardVersion) + ")");
  ShardInfo info{get<uint32_t>(h + 8), get<uint64_t>(h + 16)};
  width = get<uint32_t>(h + 12);
  if (info.vocab_size == 0) throw Error("token shard '" + path + "': vocab_size is 0");
  if (width != bytes_per_token(info.vocab_size))
    throw Error("token shard '" + path + "': " + std::to_string(width) + " bytes per token does not suit vocab_size " +
                std::to_string(info.vocab_size));
  const uint64_t size = std::filesystem::file_size(path);
  const uint64_t body = size - kHeaderBytes;
  if (info.token_count > body / width)
    throw Error("token shard '" + path + "': truncated: header says " + std::to_string(info.token_count) +
                " tokens, file holds " + std::to_string(body / width));
  if (body != info.token_count * width)
    throw Error("token shard '" + path + "': " + std::to_string(body - info.token_count * width) +
                " bytes after its last token");
  return info;
}

}  // namespace

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint32_t vocab_size) {
  if (vocab_size == 0) throw Error("token shard '" + path + "': vocab_size must be positive");
  const uint32_t width = bytes_per_token(vocab_size);
  std::string out;
  out.reserve(kHeaderBytes + tokens.size() * width);
  put(out, kShardMagic);
  put(out, kShardVersion);
  put(out, vocab_size);
  put(out, width);
  put(out, static_cast<uint64_t>(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw Error("token shard '" + path + "': token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside vocab_size " + std::to_string(vocab_size));
    if (width == 2)
      put(out, static_cast<uint16_t>(tokens[i]));
    else
      put(out, tokens[i]);
  }
  write_file_atomic(path, out);
}

ShardInfo read_shard_info(const std::string& path) {
  std::ifstream in;
  uint32_t width = 0;
  return open_shard(path, in, width);
}

Shard read_shard(const std::string& path) {
  std::ifstream in;
  uint32_t width = 0;
  const ShardInfo info = open_shard(path, in, width);
  std::string raw(info.token_count * width, '\0');
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size())))
    throw Error("token shard '" + path + "': read failed");
  Shard s;
  s.vocab_size = info.vocab_size;
  s.tokens.resize(info.token_count);
  for (uint64_t i = 0; i < info.token_count; ++i) {
    const uint32_t t = width == 2 ? get<uint16_t>(raw.data() + 2 * i) : get<uint32_t>(raw.data() + 4 * i);
    if (t >= info.vocab_size)
      throw Error("token shard '" + path + "': token " + std::to_string(t) + " at index " + std::to_string(i) +
                  " is outside vocab_size " + std::to_string(info.vocab_size));
    s.tokens[i] = t;
  }
  return s;
}

}  // namespace q2::data
