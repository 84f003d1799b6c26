#pragma once
// Token shard files: a 28-byte little-endian header, then the tokens as uint16 (vocabularies of
// at most 65536) or uint32.
//   uint32 magic 0x4B543251 ("Q2TK"), uint32 version 2, uint32 vocab_size,
//   uint32 bytes_per_token (2 or 4), uint64 token_count, uint32 crc32 (zlib) of the token bytes
// Version 1 (written before the checksum existed) is the same without the crc32: a 24-byte
// header. It is still read, unverified, so that large corpora need not be prepared again.
#include <cstdint>
#include <string>
#include <vector>

namespace q2::data {

inline constexpr uint32_t kShardMagic = 0x4B543251;
inline constexpr uint32_t kShardVersion = 2;  // written; 1 and 2 are read

// Written atomically; throws if a token is >= vocab_size.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint32_t vocab_size);

struct Shard {
  uint32_t vocab_size = 0;
  std::vector<uint32_t> tokens;
};

// Throws naming the file when it is missing, not a shard, of another version, truncated, holds
// a token id >= its vocab_size, or (version 2) its tokens do not match the checksum.
Shard read_shard(const std::string& path);

// The header alone (validated the same way and checked against the file size, but the checksum
// is not verified), so that a dataset can be checked and indexed without reading its tokens.
struct ShardInfo {
  uint32_t vocab_size = 0;
  uint64_t token_count = 0;
};
ShardInfo read_shard_info(const std::string& path);

}  // namespace q2::data
