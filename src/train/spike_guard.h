#pragma once
// The loss-spike guard (train.spike_guard, train.spike_window): the update of a step whose
// gradient norm, before clipping, exceeds spike_guard times the median of the last spike_window
// steps' norms is skipped; the step counter, the data and the learning-rate schedule go on.
// The window is the guard's whole state: checkpoints carry it, so a resumed run decides as the
// uninterrupted one would.
#include <cstdint>
#include <deque>

#include <nlohmann/json.hpp>

namespace q2::train {

class SpikeGuard {
 public:
  // factor 0: off (never skips, keeps no window).
  SpikeGuard(double factor, int64_t window);
  bool on() const { return factor_ > 0; }
  // The norm above which the next step's update is skipped: factor times the window's median
  // (the mean of the middle two for an even count); +inf while the guard is off or the window
  // holds fewer than half its size (rounded up), when the median is too young to judge by.
  double threshold() const;
  // Whether the update of a step of gradient norm `norm` is skipped (norm > threshold()). The
  // norm joins the window either way, so a lasting rise of the norms, which is no spike, lifts
  // the median and is no longer skipped.
  bool skip(double norm);
  size_t filled() const { return norms_.size(); }

  // The window, oldest first (null while off), for checkpoints; restore takes it back, keeping
  // the newest `window` norms. Null (a checkpoint written before the guard existed, or while it
  // was off) is an empty window.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

 private:
  double factor_;
  size_t window_;
  std::deque<double> norms_;
};

}  // namespace q2::train
