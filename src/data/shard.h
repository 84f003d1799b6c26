#pragma once
// Token shard files: a 24-byte little-endian header, then the tokens as uint16 (vocabularies of
// at most 65536) or uint32.
//   uint32 magic 0x4B543251 ("Q2TK"), uint32 version 1, uint32 vocab_size,
//   uint32 bytes_per_token (2 or 4), uint64 token_count
#include <cstdint>
#include <string>
#include <vector>

namespace q2::data {

inline constexpr uint32_t kShardMagic = 0x4B543251;
inline constexpr uint32_t kShardVersion = 1;

// Written atomically; throws if a token is >= vocab_size.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint32_t vocab_size);

struct Shard {
  uint32_t vocab_size = 0;
  std::vector<uint32_t> tokens;
};

// Throws naming the file when it is missing, not a shard, of another version, truncated, or holds
// a token id >= its vocab_size.
Shard read_shard(const std::string& path);

// The header alone (validated the same way, and checked against the file size), so that a
// dataset can be checked and indexed without reading its tokens.
struct ShardInfo {
  uint32_t vocab_size = 0;
  uint64_t token_count = 0;
};
ShardInfo read_shard_info(const std::string& path);

}  // namespace q2::data
