#include "train/spike_guard.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"

namespace q2::train {

SpikeGuard::SpikeGuard(double factor, int64_t window) : factor_(factor), window_(static_cast<size_t>(window)) {}

double SpikeGuard::threshold() const {
  if (!on() || 2 * norms_.size() < window_) return std::numeric_limits<double>::infinity();
  std::vector<double> v(norms_.begin(), norms_.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  double median = v[mid];
  if (v.size() % 2 == 0) median = (median + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
  return factor_ * median;
}

bool SpikeGuard::skip(double norm) {
  if (!on()) return false;
  const bool spike = norm > threshold();
  norms_.push_back(norm);
  if (norms_.size() > window_) norms_.pop_front();
  return spike;
}

nlohmann::json SpikeGuard::state() const { return on() ? nlohmann::json(norms_) : nlohmann::json(); }

void SpikeGuard::restore(const nlohmann::json& state) {
  norms_.clear();
  if (state.is_null() || !on()) return;
  if (!state.is_array()) throw Error("the spike guard's window must be a list of gradient norms, got " + state.dump());
  for (const nlohmann::json& n : state) {
    if (!n.is_number() || !std::isfinite(n.get<double>()))
      throw Error("the spike guard's window must be a list of gradient norms, got " + state.dump());
    norms_.push_back(n.get<double>());
  }
  while (norms_.size() > window_) norms_.pop_front();
}

}  // namespace q2::train
