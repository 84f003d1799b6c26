#include "common/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace q2 {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error("cannot write '" + path + "': it is a directory");
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec))
    throw Error("cannot write '" + path + "': folder '" + parent.string() + "' does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot write '" + path + "' (through '" + tmp + "'): " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error("writing '" + path + "': " + std::strerror(e));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error("cannot flush '" + path + "': " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  }
}

bool is_atomic_write_temp(const std::string& filename) {
  const size_t at = filename.rfind(".tmp.");
  if (at == std::string::npos || at == 0 || at + 5 == filename.size()) return false;
  return std::all_of(filename.begin() + static_cast<std::ptrdiff_t>(at + 5), filename.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace q2
