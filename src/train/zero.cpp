#include "train/zero.h"

#include <algorithm>
#include <numeric>

#include "model/collectives.h"

namespace q2::train {

std::vector<int> balance_owners(const std::vector<uint64_t>& sizes, int world) {
  std::vector<size_t> order(sizes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<uint64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(sizes.size());
  for (const size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end());
    *least += sizes[i];
    owner[i] = static_cast<int>(least - load.begin());
  }
  return owner;
}

void gather_weights(model::Transformer& model, const Shard& shard, const std::string& what) {
  if (!shard.sharded()) return;
  std::vector<model::Tensor> weights;
  for (const model::Param& p : model.params()) weights.push_back(p.value);
  model::Collectives& c = model.backend().collectives();
  c.start_all_gather(weights, shard.owner, what);
  c.finish(what);
}

}  // namespace q2::train
