#include "train/grad_reducer.h"

#include <cstdint>

#include "common/error.h"
#include "model/collectives.h"

namespace q2::train {

GradReducer::GradReducer(model::Transformer& model, double bucket_mb, Shard shard)
    : model_(model),
      limit_(bucket_mb > 0 ? static_cast<size_t>(bucket_mb * (1 << 20)) : SIZE_MAX),
      shard_(std::move(shard)),
      handed_(model.grads().size()) {}

model::Transformer::GradsReady GradReducer::hook(int64_t micro, int64_t micros, const std::string& what) {
  if (micro + 1 < micros) return nullptr;
  what_ = what;
  return [this](size_t first, size_t count) { ready(first, count); };
}

void GradReducer::ready(size_t first, size_t count) {
  for (size_t i = first; i < first + count; ++i) {
    if (handed_.at(i)) throw Error(model_.params()[i].name + ": backward handed its gradient over twice");
    handed_[i] = true;
    const model::Tensor& g = model_.grads()[i];
    const size_t bytes = static_cast<size_t>(g.size()) * sizeof(float);  // gradients are float32
    // At most the limit per bucket, except a tensor above it, which goes alone.
    if (!bucket_.empty() && bucket_bytes_ + bytes > limit_) start();
    bucket_.push_back(i);
    bucket_bytes_ += bytes;
    if (bucket_bytes_ >= limit_) start();
  }
}

void GradReducer::start() {
  std::vector<model::Tensor> grads;
  std::vector<int> owners;
  for (const size_t i : bucket_) {
    grads.push_back(model_.grads()[i]);
    if (shard_.sharded()) owners.push_back(shard_.owner[i]);
  }
  model::Collectives& c = model_.backend().collectives();
  if (shard_.sharded()) c.start_reduce_scatter_sum(grads, owners, what_);
  else c.start_allreduce_sum(grads, what_);
  bucket_.clear();
  bucket_bytes_ = 0;
}

void GradReducer::finish() {
  for (size_t i = 0; i < handed_.size(); ++i)
    if (!handed_[i]) throw Error(model_.params()[i].name + ": backward never handed its gradient over");
  handed_.assign(handed_.size(), false);
  if (!bucket_.empty()) start();
  model_.backend().collectives().finish(what_);
}

}  // namespace q2::train
