#pragma once
// The NCCL communicator of a data-parallel job (docs/ARCHITECTURE.md): one process per GPU, set
// up through the file rendezvous of common/rendezvous.h. Every wait is bounded by the job's
// timeout, so a rank that died turns into an error on the others instead of a hang.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/collectives.h"

namespace q2::cuda {

class Communicator final : public model::Collectives {
 public:
  // Selects the GPU (local rank modulo the device count), then joins the other ranks.
  explicit Communicator(const model::DistConfig& dist);
  ~Communicator() override;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const override { return dist_.rank; }
  int world() const override { return dist_.world; }

  // On timeout or an NCCL error the communicator is aborted and q2::Error names `what`.
  // The start_* calls: in place, float32, one NCCL group on the communicator's own stream, after
  // the work queued on stream 0 so far, so that stream 0 goes on meanwhile (backward); they return
  // once enqueued. ZeRO-1's owners hold whole tensors of different sizes, which NCCL's
  // ncclReduceScatter and ncclAllGather (equal parts of one buffer) cannot express: their
  // reduce-scatter is an ncclReduce to each tensor's owner and their all-gather an ncclBroadcast
  // from it, grouped.
  void start_allreduce_sum(const std::vector<model::Tensor>& tensors, const std::string& what) override;
  void start_reduce_scatter_sum(const std::vector<model::Tensor>& tensors, const std::vector<int>& owners,
                                const std::string& what) override;
  void start_all_gather(const std::vector<model::Tensor>& tensors, const std::vector<int>& owners,
                        const std::string& what) override;
  // Stream 0 waits for every collective started; returns once they are done.
  void finish(const std::string& what) override;
  // On stream 0.
  void allreduce_sum(std::vector<double>& values, const std::string& what) override;

 private:
  // One NCCL group of `op(tensor i, stream)` on the communicator's stream after stream 0's work so far.
  void start(const std::vector<model::Tensor>& tensors, const std::string& what,
             const std::function<void(const model::Tensor&, size_t i)>& op);
  // Fails unless `result` (an ncclResult_t) is success or in progress.
  void ok(int result, const char* call, const std::string& what);
  // Until NCCL has enqueued what was issued, then (with `drain`) until stream 0 has run it.
  void wait(const std::string& what, bool drain = true);
  [[noreturn]] void fail(const std::string& why);

  model::DistConfig dist_;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace q2::cuda
