#pragma once
// The NCCL communicator of a data-parallel job (docs/MULTI_GPU.md): one process per GPU, set
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

  // In-place sums over all ranks on stream 0, one call per float32 tensor in one NCCL group;
  // return when done. On timeout or an NCCL error the communicator is aborted and q2::Error
  // names `what`.
  void allreduce_sum(std::vector<model::Tensor>& tensors, const std::string& what);
  double allreduce_sum(double v, const std::string& what);

 private:
  void wait(const std::string& what);
  [[noreturn]] void fail(const std::string& why);

  model::DistConfig dist_;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace q2::cuda
