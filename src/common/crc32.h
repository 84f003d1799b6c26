#pragma once
// CRC-32 (zlib's, the one gzip and zip use), the checksum of checkpoints and token shards.
#include <cstddef>
#include <cstdint>
#include <string>

namespace q2 {

uint32_t crc32_of(const char* p, size_t n);  // of a buffer of any size
// Of a whole file; an error naming the file when it cannot be read.
uint32_t file_crc32(const std::string& path);

}  // namespace q2
