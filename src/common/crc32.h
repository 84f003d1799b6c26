#pragma once
// CRC-32 (zlib's, the one gzip and zip use) of a buffer of any size.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace q2 {

inline uint32_t crc32_of(const char* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes at most a uInt per call
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

}  // namespace q2
