#pragma once
// The collectives of a data-parallel job (docs/ARCHITECTURE.md): one interface over NCCL between
// processes (cuda/dist.h) and over threads as ranks inside one process (model/in_process.h).
// Every rank calls the same collectives in the same order, with tensors of the same shapes.
#include <string>
#include <vector>

#include "model/backend.h"

namespace q2::model {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;

  // The start_* calls work in place on float32 tensors the backend owns, once the work queued so
  // far has written them, and may return before they are done, so that they overlap the work
  // queued next, which must not touch these tensors; finish() waits for every one started: later
  // work sees the results. `what` names the data in errors ("gradients of step 37").
  // Every rank gets the sum.
  virtual void start_allreduce_sum(const std::vector<Tensor>& tensors, const std::string& what) = 0;
  // ZeRO-1's reduce-scatter, whole tensors to their owners: rank owners[i] gets the sum of
  // tensors[i]; the other ranks' tensors[i] stay as they were.
  virtual void start_reduce_scatter_sum(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                                        const std::string& what) = 0;
  // ZeRO-1's all-gather: every rank gets rank owners[i]'s tensors[i].
  virtual void start_all_gather(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                                const std::string& what) = 0;
  virtual void finish(const std::string& what) = 0;
  // Host values summed over all ranks in place; returns once summed.
  virtual void allreduce_sum(std::vector<double>& values, const std::string& what) = 0;
  double allreduce_sum(double v, const std::string& what);
};

// World 1, the backends' default: nothing to sum or copy.
Collectives& single_rank();

}  // namespace q2::model
