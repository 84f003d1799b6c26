#include "fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace q2::fuzz {

namespace fs = std::filesystem;

namespace {

std::string make_work_dir() {
  const char* env = std::getenv("Q2_FUZZ_TMPDIR");  // run_fuzzer.sh's, removed even after a crash
  const fs::path base = env && *env                       ? fs::path(env)
                        : fs::is_directory("/dev/shm") ? fs::path("/dev/shm")
                                                       : fs::temp_directory_path();
  std::string templ = (base / "q2fuzz-XXXXXX").string();
  if (!mkdtemp(templ.data())) {
    std::perror("fuzz: mkdtemp");
    std::abort();
  }
  return templ;
}

}  // namespace

const std::string& work_dir() {
  // On the heap, never freed: the exit handler that removes the directory runs after the
  // destructors of statics initialized later than it was registered.
  static const std::string* const dir = [] {
    const auto* d = new std::string(make_work_dir());
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(work_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = work_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(("fuzz: writing " + path).c_str());
    std::abort();
  }
  return path;
}

std::string write_input(const std::string& name, const std::string& bytes) {
  return write_input(name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

void rejected(const std::exception& e) {
  static const bool verbose = std::getenv("Q2_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

}  // namespace q2::fuzz
