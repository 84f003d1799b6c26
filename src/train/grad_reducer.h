#pragma once
// Data-parallel gradient sums overlapped with backward (docs/ARCHITECTURE.md): the model's
// backward tells which gradients are final; they go, in that order (reverse layer order), into
// buckets of at most dist.bucket_mb, and each bucket's sum over all ranks starts as soon as it
// is full, so that communication runs while backward computes the earlier layers: an all-reduce,
// or under ZeRO-1 a reduce-scatter that sums each gradient on the rank owning its parameter. The
// backend's collectives do the sums (nothing at world 1).
#include <string>
#include <vector>

#include "model/transformer.h"
#include "train/zero.h"

namespace q2::train {

class GradReducer {
 public:
  // bucket_mb: the bucket limit in MiB; 0: a single bucket, started once backward is done.
  GradReducer(model::Transformer& model, double bucket_mb, Shard shard = {});

  // The hook for the backward of micro-batch `micro` of `micros` (gradient accumulation):
  // gradients are final only in the last one, so the earlier ones get none and only
  // accumulate. `what` names the gradients in errors ("gradients of step 37").
  model::Transformer::GradsReady hook(int64_t micro, int64_t micros, const std::string& what);

  // Starts the last, partly filled bucket and waits for every sum: the gradients (sharded: those
  // of this rank's parameters) are then the sums over all ranks. Throws, naming the parameter,
  // when backward did not hand over every gradient (a replica would silently drift apart).
  void finish();

 private:
  void ready(size_t first, size_t count);
  void start();

  model::Transformer& model_;
  size_t limit_;  // bytes
  Shard shard_;
  std::string what_;
  std::vector<bool> handed_;  // since the last finish()
  std::vector<size_t> bucket_;  // parameter indices
  size_t bucket_bytes_ = 0;
};

}  // namespace q2::train
