#include "common/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <vector>

#include "common/error.h"
#include "common/file.h"

namespace q2 {

Matrix load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "'");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error("'" + path + "' is not a .npy file");
  const int major = magic[6];
  uint32_t hlen = 0;
  if (major == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else if (major == 2 || major == 3) {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  } else {
    throw Error("'" + path + "': unsupported .npy version " + std::to_string(major));
  }
  std::string header(hlen, '\0');
  if (!f.read(header.data(), hlen)) throw Error("'" + path + "': truncated .npy header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<|=]?)(f4|f8)'")))
    throw Error("'" + path + "': only little-endian float32/float64 arrays are supported (header " + header + ")");
  const bool f64 = m[2] == "f8";
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True")))
    throw Error("'" + path + "': Fortran-order arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\((\\d+),\\s*(\\d+),?\\s*\\)")))
    throw Error("'" + path + "': expected a 2-D array (header " + header + ")");
  Matrix out(std::stoll(m[1]), std::stoll(m[2]));
  const size_t n = static_cast<size_t>(out.size());
  if (f64) {
    std::vector<double> d(n);
    if (!f.read(reinterpret_cast<char*>(d.data()), static_cast<std::streamsize>(n * 8)))
      throw Error("'" + path + "': truncated data");
    for (size_t i = 0; i < n; ++i) out.data[i] = static_cast<float>(d[i]);
  } else if (!f.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(n * 4))) {
    throw Error("'" + path + "': truncated data");
  }
  return out;
}

void save_npy(const std::string& path, const Matrix& m) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(m.rows) + ", " +
                       std::to_string(m.cols) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // pad so data starts on a 64-byte boundary
  header += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes += '\0';
  const uint16_t hl = static_cast<uint16_t>(header.size());
  bytes.append(reinterpret_cast<const char*>(&hl), 2);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(m.data.data()), m.data.size() * sizeof(float));
  write_file_atomic(path, bytes);
}

}  // namespace q2
