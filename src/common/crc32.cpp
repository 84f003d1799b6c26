#include "common/crc32.h"

#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "common/error.h"

namespace q2 {

uint32_t crc32_of(const char* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes at most a uInt per call
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

uint32_t file_crc32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read '" + path + "'");
  uLong c = crc32(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    c = crc32(c, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(f.gcount()));
  }
  if (!f.eof()) throw Error("cannot read '" + path + "'");
  return static_cast<uint32_t>(c);
}

}  // namespace q2
