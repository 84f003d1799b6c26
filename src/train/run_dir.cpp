#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file.h"

namespace q2::train {

namespace fs = std::filesystem;

RunDir::RunDir(const std::string& dir, const std::function<void(const std::string&)>& log) : dir_(dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw Error("out.dir '" + dir + "' is a file, not a folder");
  fs::create_directories(dir, ec);
  if (ec) throw Error("out.dir '" + dir + "': cannot create the folder: " + ec.message());
  const std::string lock = dir + "/.lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw Error("out.dir '" + dir + "': cannot open '" + lock + "': " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
    ::close(lock_fd_);
    throw Error("out.dir '" + dir + "' is in use by another quartet2 process" +
                (n > 0 ? " (pid " + std::string(pid, static_cast<size_t>(n)) + ")" : std::string()) +
                "; wait for it to finish or choose another out.dir");
  }
  // The pid only serves the message above, so a failure to record it is ignored.
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) == 0) (void)!::pwrite(lock_fd_, me.data(), me.size(), 0);
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file() || !is_atomic_write_temp(e.path().filename().string())) continue;
    const auto bytes = e.file_size();
    fs::remove(e.path());
    log("removed '" + e.path().string() + "' (" + std::to_string(bytes) +
        " bytes), left by a write that a killed process did not finish");
  }
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing drops the lock
}

void RunDir::start(StartMode mode) const {
  const bool has_ckpt = fs::exists(checkpoint()), has_metrics = fs::exists(metrics());
  switch (mode) {
    case StartMode::kFresh:
      if (has_ckpt || has_metrics)
        throw Error("out.dir '" + dir_ + "' already holds a run (" + (has_ckpt ? "checkpoint.bin" : "metrics.jsonl") +
                    "); continue it with --resume, start it over with --overwrite (deletes its checkpoint and "
                    "metrics), or choose another out.dir");
      break;
    case StartMode::kOverwrite:
      fs::remove(checkpoint());
      fs::remove(metrics());
      break;
    case StartMode::kResume:
      if (!has_ckpt)
        throw Error("cannot resume: out.dir '" + dir_ + "' holds no checkpoint.bin (start the run without --resume)");
      break;
  }
}

void RunDir::truncate_metrics(int64_t after_step) const {
  std::ifstream in(metrics());
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: the write of this line was cut short
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    if (j["step"].get<int64_t>() <= after_step) kept += line + '\n';
  }
  in.close();
  write_file_atomic(metrics(), kept);
}

}  // namespace q2::train
