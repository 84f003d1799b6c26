#pragma once
// ZeRO-1 (dist.zero = 1, docs/ARCHITECTURE.md): each rank keeps the optimizer state of its shard
// of the parameters only. Gradients are reduce-scattered (each parameter's sum to the rank that
// owns it), each rank updates its shard, and the updated weights are all-gathered. Parameters
// are sharded whole, as Muon orthogonalizes whole matrices.
#include <cstdint>
#include <string>
#include <vector>

#include "model/transformer.h"

namespace q2::train {

// Which parameters this rank's optimizer updates.
struct Shard {
  std::vector<int> owner;  // per parameter, its rank; empty: every rank updates every one (dist.zero = 0)
  int rank = 0;
  bool sharded() const { return !owner.empty(); }
  bool holds(size_t param) const { return owner.empty() || owner[param] == rank; }
};

// Owners balanced by size: the largest first (the earlier on a tie), each to the rank that holds
// the fewest elements so far (the lowest on a tie). The same on every rank.
std::vector<int> balance_owners(const std::vector<uint64_t>& sizes, int world);

// Every rank gets the weights its owners updated (nothing to do unsharded).
void gather_weights(model::Transformer& model, const Shard& shard, const std::string& what);

}  // namespace q2::train
