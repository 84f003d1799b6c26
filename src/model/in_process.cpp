#include "model/in_process.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <sstream>

#include "common/error.h"

namespace q2::model {

namespace {

enum class Kind { kAllReduce, kReduceScatter, kAllGather, kValues };

// One rank's side of a collective.
struct Call {
  Kind kind = Kind::kValues;
  std::string what;
  std::vector<float*> data;
  std::vector<int64_t> sizes;
  std::vector<int> owners;
  std::vector<double>* values = nullptr;
  size_t count = 0;  // of values: the vector may be gone when another rank describes the call
};

std::string describe(const Call& c) {
  static const char* const kinds[] = {"all-reduce", "reduce-scatter", "all-gather", "all-reduce"};
  std::ostringstream o;
  o << kinds[static_cast<int>(c.kind)] << " of " << c.what << " (";
  if (c.kind == Kind::kValues) {
    o << c.count << " values)";
    return o.str();
  }
  o << "sizes";
  for (size_t i = 0; i < c.sizes.size(); ++i) o << (i ? ", " : " ") << c.sizes[i];
  if (!c.owners.empty()) o << "; owners";
  for (size_t i = 0; i < c.owners.size(); ++i) o << (i ? ", " : " ") << c.owners[i];
  o << ")";
  return o.str();
}

bool same(const Call& a, const Call& b) {
  return a.kind == b.kind && a.what == b.what && a.sizes == b.sizes && a.owners == b.owners &&
         a.count == b.count;
}

}  // namespace

struct InProcessGroup::Shared {
  int world;
  double timeout_s;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;  // of the barrier: how many times every rank has arrived
  bool aborted = false;
  // Each rank's current call: written by its rank before the collective's first barrier, read by
  // all between its two barriers.
  std::vector<Call> calls;

  Shared(int w, double t) : world(w), timeout_s(t), calls(static_cast<size_t>(w)) {}

  // Returns once every rank has arrived.
  void barrier(int rank, const std::string& what) {
    std::unique_lock<std::mutex> lock(mu);
    const uint64_t gen = generation;
    if (!aborted && ++arrived == world) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    const bool woke = cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                                  [&] { return generation != gen || aborted; });
    if (generation != gen) return;
    // This rank leaves the barrier unfinished: nobody can pass it any more.
    aborted = true;
    cv.notify_all();
    std::ostringstream timeout;
    timeout << timeout_s;
    throw Error("rank " + std::to_string(rank) + ": the " + what +
                (woke ? " was abandoned: the in-process group was aborted"
                      : " did not complete within " + timeout.str() + " s; another rank may have died"));
  }
};

class InProcessGroup::Member final : public Collectives {
 public:
  Member(Shared& s, int rank) : s_(s), rank_(rank) {}
  int rank() const override { return rank_; }
  int world() const override { return s_.world; }

  void start_allreduce_sum(const std::vector<Tensor>& tensors, const std::string& what) override {
    run(call(Kind::kAllReduce, tensors, {}, what));
  }
  void start_reduce_scatter_sum(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                                const std::string& what) override {
    run(call(Kind::kReduceScatter, tensors, owners, what));
  }
  void start_all_gather(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                        const std::string& what) override {
    run(call(Kind::kAllGather, tensors, owners, what));
  }
  void finish(const std::string&) override {}
  void allreduce_sum(std::vector<double>& values, const std::string& what) override {
    Call c;
    c.what = what;
    c.values = &values;
    c.count = values.size();
    run(std::move(c));
  }

 private:
  Call call(Kind kind, const std::vector<Tensor>& tensors, const std::vector<int>& owners, const std::string& what) {
    if (kind != Kind::kAllReduce && owners.size() != tensors.size())
      throw Error("rank " + std::to_string(rank_) + ": " + std::to_string(tensors.size()) + " tensors but " +
                  std::to_string(owners.size()) + " owners for the collective of " + what);
    Call c;
    c.kind = kind;
    c.what = what;
    c.owners = owners;
    for (const Tensor& t : tensors) {
      if (t.dtype != DType::kF32) throw Error("collective of " + what + ": only float32 tensors are summed or copied");
      c.data.push_back(static_cast<float*>(t.data));
      c.sizes.push_back(t.size());
    }
    return c;
  }

  void run(Call mine) {
    const std::string what = describe(mine);
    s_.calls[static_cast<size_t>(rank_)] = std::move(mine);
    s_.barrier(rank_, what);
    // Every rank checks every call against rank 0's, so that all of them fail alike.
    const std::vector<Call>& calls = s_.calls;
    for (size_t q = 1; q < calls.size(); ++q)
      if (!same(calls[q], calls[0]))
        throw Error("rank " + std::to_string(rank_) + ": rank " + std::to_string(q) + " called the " +
                    describe(calls[q]) + " where rank 0 called the " + describe(calls[0]));
    for (const int o : calls[0].owners)
      if (o < 0 || o >= s_.world)
        throw Error("rank " + std::to_string(rank_) + ": owner " + std::to_string(o) + " outside the " +
                    std::to_string(s_.world) + " ranks in the " + what);
    const Call& first = calls[0];
    std::vector<double> sums;
    if (first.kind == Kind::kValues) {
      sums.assign(first.count, 0.0);
      for (size_t k = 0; k < sums.size(); ++k) {
        double s = (*first.values)[k];
        for (size_t q = 1; q < calls.size(); ++q) s += (*calls[q].values)[k];
        sums[k] = s;
      }
    }
    // Each rank sums or copies its share of every tensor's elements, for every rank.
    for (size_t i = 0; i < first.sizes.size(); ++i) {
      const int64_t n = first.sizes[i], lo = n * rank_ / s_.world, hi = n * (rank_ + 1) / s_.world;
      const int owner = first.owners.empty() ? -1 : first.owners[i];
      for (int64_t e = lo; e < hi; ++e) {
        if (first.kind == Kind::kAllGather) {
          for (const Call& c : calls) c.data[i][e] = calls[static_cast<size_t>(owner)].data[i][e];
          continue;
        }
        float s = first.data[i][e];
        for (size_t q = 1; q < calls.size(); ++q) s += calls[q].data[i][e];
        if (first.kind == Kind::kAllReduce) {
          for (const Call& c : calls) c.data[i][e] = s;
        } else {
          calls[static_cast<size_t>(owner)].data[i][e] = s;
        }
      }
    }
    // Nobody reuses its tensors or its slot before every rank is done with them; after this the
    // other slots may hold the next collective already.
    std::vector<double>* const values = calls[static_cast<size_t>(rank_)].values;
    s_.barrier(rank_, what);
    if (values) *values = sums;
  }

  Shared& s_;
  int rank_;
};

InProcessGroup::InProcessGroup(int world, double timeout_s) {
  if (world < 1) throw Error("an in-process group needs at least one rank, got " + std::to_string(world));
  s_ = std::make_unique<Shared>(world, timeout_s);
  for (int r = 0; r < world; ++r) members_.push_back(std::make_unique<Member>(*s_, r));
}

InProcessGroup::~InProcessGroup() = default;

int InProcessGroup::world() const { return s_->world; }

Collectives& InProcessGroup::rank(int r) { return *members_.at(static_cast<size_t>(r)); }

void InProcessGroup::abort() {
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->aborted = true;
  s_->cv.notify_all();
}

}  // namespace q2::model
