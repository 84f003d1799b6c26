#include "common/rendezvous.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/file.h"

namespace q2 {

std::string rendezvous_file(const std::string& dir) { return dir + "/nccl-id"; }

void publish_rendezvous(const std::string& dir, const std::string& bytes) {
  std::filesystem::create_directories(dir);
  write_file_atomic(rendezvous_file(dir), bytes);
}

std::string await_rendezvous(const std::string& dir, size_t size, double timeout_s) {
  const std::string path = rendezvous_file(dir);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    std::ifstream f(path, std::ios::binary);
    if (f) {
      std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (bytes.size() == size) return bytes;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::ostringstream m;
      m << "'" << path << "' did not appear (with " << size << " bytes) within " << timeout_s
        << " s; is rank 0 running with the same rendezvous directory?";
      throw Error(m.str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace q2
