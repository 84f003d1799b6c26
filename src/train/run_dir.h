#pragma once
// The run folder (out.dir) of a training run, and the rules that keep a week-long run safe:
// one trainer at a time, no run replaced by accident, nothing left over from a killed one.
#include <functional>
#include <string>

namespace q2::train {

enum class StartMode {
  kFresh,      // a new run; the folder must not hold one already
  kResume,     // continue the run in the folder from its checkpoint
  kOverwrite,  // a new run that replaces the one in the folder
};

class RunDir {
 public:
  // Creates `dir` if needed and locks it for this process (flock on dir/.lock, dropped by the OS
  // when the process ends however it ends). Another live trainer on the folder is an error naming
  // its pid. Temporary files of writes that a killed process left behind are removed (logged).
  RunDir(const std::string& dir, const std::function<void(const std::string&)>& log);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  // kFresh: an error when the folder holds a checkpoint or metrics (naming --resume and
  // --overwrite); kOverwrite: removes them; kResume: an error when there is no checkpoint.
  void start(StartMode mode) const;
  // A resumed run repeats the steps after its checkpoint: their metrics lines (and a line cut short
  // by a kill) are dropped, so every step appears once.
  void truncate_metrics(int64_t after_step) const;

  std::string checkpoint() const { return checkpoint_file(dir_); }
  std::string metrics() const { return metrics_file(dir_); }
  // The files of a run folder, for every rank (only rank 0 holds a RunDir).
  static std::string checkpoint_file(const std::string& dir) { return dir + "/checkpoint.bin"; }
  static std::string metrics_file(const std::string& dir) { return dir + "/metrics.jsonl"; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

}  // namespace q2::train
