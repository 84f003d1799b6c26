#include "data/shard.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/crc32.h"
#include "common/error.h"
#include "common/file.h"

namespace q2::data {

static_assert(std::endian::native == std::endian::little, "shards are read and written as little-endian memory");

namespace {

constexpr size_t kHeaderBytesV1 = 24;
constexpr size_t kHeaderBytes = 28;  // version 2: the v1 header and the checksum

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

struct Header {
  ShardInfo info;
  uint32_t version = 0, width = 0;
  uint32_t crc = 0;  // version 2 only
};

// Opens `path` and validates its header against the file's size; leaves `in` after the header.
Header open_shard(const std::string& path, std::ifstream& in) {
  in.open(path, std::ios::binary);
  if (!in) throw Error("token shard '" + path + "': cannot open (missing or unreadable)");
  char h[kHeaderBytes];
  if (!in.read(h, kHeaderBytesV1))
    throw Error("token shard '" + path + "': not a quartet2 token shard (shorter than its 24-byte header)");
  if (get<uint32_t>(h) != kShardMagic) throw Error("token shard '" + path + "': not a quartet2 token shard (bad magic)");
  Header hd;
  hd.version = get<uint32_t>(h + 4);
  if (hd.version != 1 && hd.version != kShardVersion)
    throw Error("token shard '" + path + "': unsupported version " + std::to_string(hd.version) +
                " (this build reads 1 and " + std::to_string(kShardVersion) + ")");
  const size_t header_bytes = hd.version == 1 ? kHeaderBytesV1 : kHeaderBytes;
  if (hd.version != 1) {
    if (!in.read(h + kHeaderBytesV1, kHeaderBytes - kHeaderBytesV1))
      throw Error("token shard '" + path + "': truncated: shorter than its 28-byte header");
    hd.crc = get<uint32_t>(h + kHeaderBytesV1);
  }
  hd.info = {get<uint32_t>(h + 8), get<uint64_t>(h + 16)};
  hd.width = get<uint32_t>(h + 12);
  if (hd.info.vocab_size == 0) throw Error("token shard '" + path + "': vocab_size is 0");
  if (hd.width != bytes_per_token(hd.info.vocab_size))
    throw Error("token shard '" + path + "': " + std::to_string(hd.width) + " bytes per token does not suit vocab_size " +
                std::to_string(hd.info.vocab_size));
  const uint64_t body = std::filesystem::file_size(path) - header_bytes;
  if (hd.info.token_count > body / hd.width)
    throw Error("token shard '" + path + "': truncated: header says " + std::to_string(hd.info.token_count) +
                " tokens, file holds " + std::to_string(body / hd.width));
  if (body != hd.info.token_count * hd.width)
    throw Error("token shard '" + path + "': " + std::to_string(body - hd.info.token_count * hd.width) +
                " bytes after its last token");
  return hd;
}

std::string hex(uint32_t v) {
  char s[11];
  std::snprintf(s, sizeof s, "0x%08x", v);
  return s;
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
  put(out, uint32_t{0});  // the checksum, filled in below
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw Error("token shard '" + path + "': token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside vocab_size " + std::to_string(vocab_size));
    if (width == 2)
      put(out, static_cast<uint16_t>(tokens[i]));
    else
      put(out, tokens[i]);
  }
  const uint32_t crc = crc32_of(out.data() + kHeaderBytes, out.size() - kHeaderBytes);
  std::memcpy(out.data() + kHeaderBytesV1, &crc, sizeof crc);
  write_file_atomic(path, out);
}

ShardInfo read_shard_info(const std::string& path) {
  std::ifstream in;
  return open_shard(path, in).info;
}

Shard read_shard(const std::string& path) {
  std::ifstream in;
  const Header hd = open_shard(path, in);
  const ShardInfo& info = hd.info;
  std::string raw(info.token_count * hd.width, '\0');
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size())))
    throw Error("token shard '" + path + "': read failed");
  Shard s;
  s.vocab_size = info.vocab_size;
  s.tokens.resize(info.token_count);
  for (uint64_t i = 0; i < info.token_count; ++i) {
    const uint32_t t = hd.width == 2 ? get<uint16_t>(raw.data() + 2 * i) : get<uint32_t>(raw.data() + 4 * i);
    if (t >= info.vocab_size)
      throw Error("token shard '" + path + "': token " + std::to_string(t) + " at index " + std::to_string(i) +
                  " is outside vocab_size " + std::to_string(info.vocab_size));
    s.tokens[i] = t;
  }
  // A token changed to another valid id passes every check above; only the checksum sees it.
  if (hd.version != 1) {
    const uint32_t crc = crc32_of(raw.data(), raw.size());
    if (crc != hd.crc)
      throw Error("token shard '" + path + "': checksum mismatch (header " + hex(hd.crc) + ", tokens " + hex(crc) +
                  "): the file is corrupt; prepare the dataset again");
  }
  return s;
}

}  // namespace q2::data
