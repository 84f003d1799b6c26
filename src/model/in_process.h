#pragma once
// Threads as ranks: the collectives of `world` ranks inside one process, each rank a thread with
// the CPU backend (BackendOptions::in_process), so that data parallelism and ZeRO-1 are tested
// at any world size without GPUs. A collective runs when every rank has called it (the CPU's
// work is synchronous: finish() has nothing left to wait for), each rank summing or copying its
// share of the elements. Sums add the ranks' values in rank order 0, 1, ..., the same for every
// collective, so results are reproducible and an all-reduce's sum is bit for bit the
// reduce-scatter's. Ranks that call different collectives (kind, shapes, owners) all get an
// Error naming the difference, as NCCL would hang instead; a rank that waits longer than
// timeout_s, or a group aborted meanwhile, is an Error too.
#include <memory>
#include <vector>

#include "model/collectives.h"

namespace q2::model {

class InProcessGroup {
 public:
  explicit InProcessGroup(int world, double timeout_s = 120);
  ~InProcessGroup();
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;

  int world() const;
  Collectives& rank(int r);
  // Every collective waiting now or called later fails at once: for a rank's thread that failed,
  // so that the others stop instead of waiting out the timeout.
  void abort();

 private:
  struct Shared;
  class Member;
  std::unique_ptr<Shared> s_;
  std::vector<std::unique_ptr<Member>> members_;
};

}  // namespace q2::model
