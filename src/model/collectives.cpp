#include "model/collectives.h"

namespace q2::model {

namespace {

class SingleRank final : public Collectives {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  void start_allreduce_sum(const std::vector<Tensor>&, const std::string&) override {}
  void start_reduce_scatter_sum(const std::vector<Tensor>&, const std::vector<int>&, const std::string&) override {}
  void start_all_gather(const std::vector<Tensor>&, const std::vector<int>&, const std::string&) override {}
  void finish(const std::string&) override {}
  void allreduce_sum(std::vector<double>&, const std::string&) override {}
};

}  // namespace

double Collectives::allreduce_sum(double v, const std::string& what) {
  std::vector<double> values{v};
  allreduce_sum(values, what);
  return values[0];
}

Collectives& single_rank() {
  static SingleRank one;
  return one;
}

Collectives& Backend::collectives() { return single_rank(); }

}  // namespace q2::model
