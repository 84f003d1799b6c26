#pragma once
// The NCCL communicator of a data-parallel job (docs/ARCHITECTURE.md): one process per GPU, set
// up through the file rendezvous of common/rendezvous.h. Every wait is bounded by the job's
// timeout, so a rank that died turns into an error on the others instead of a hang.
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"

namespace q2::cuda {

class Communicator {
 public:
  // Selects the GPU (local rank modulo the device count), then joins the other ranks.
  explicit Communicator(const model::DistConfig& dist);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return dist_.rank; }
  int world() const { return dist_.world; }

  // Sums over all ranks. On timeout or an NCCL error the communicator is aborted and q2::Error
  // names `what`.
  // In place, float32, one NCCL group on the communicator's own stream, after the work queued
  // on stream 0 so far, so that stream 0 goes on meanwhile (backward); returns once enqueued.
  void start_allreduce_sum(const std::vector<model::Tensor>& tensors, const std::string& what);
  // Stream 0 waits for every sum started; returns once they are done.
  void finish_allreduces(const std::string& what);
  // On stream 0; returns the sum.
  double allreduce_sum(double v, const std::string& what);

 private:
  // Until NCCL has enqueued what was issued, then (with `drain`) until stream 0 has run it.
  void wait(const std::string& what, bool drain = true);
  [[noreturn]] void fail(const std::string& why);

  model::DistConfig dist_;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace q2::cuda
