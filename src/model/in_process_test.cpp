#include "model/in_process.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/error_test_util.h"
#include "model/in_process_test_util.h"

namespace q2::model {
namespace {

using test::on_ranks;

// Rank r's value of element e: large and small magnitudes, so that the order of the sum shows.
float value(int r, int64_t e) {
  const float big[] = {1e8f, -1e8f, 3.0f, 1e-3f};
  return big[(r + e) % 4] * static_cast<float>(1 + e % 7) + static_cast<float>(r) * 0.1f;
}

// The sum over `world` ranks in rank order, as every collective must add them.
float in_rank_order(int world, int64_t e) {
  float s = value(0, e);
  for (int r = 1; r < world; ++r) s += value(r, e);
  return s;
}

Tensor filled(Backend& b, int r, int64_t rows, int64_t cols) {
  Matrix m(rows, cols);
  for (int64_t e = 0; e < m.size(); ++e) m.data[static_cast<size_t>(e)] = value(r, e);
  Tensor t = b.alloc(rows, cols, Role::kParam);
  b.upload(m, t);
  return t;
}

bool bitwise_equal(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(InProcessGroup, SumsInRankOrderAndCopiesFromOwners) {
  for (int world : {1, 2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(world));
    InProcessGroup group(world);
    // Per rank: the tensors after each collective, downloaded.
    std::vector<std::vector<Matrix>> reduced(world), scattered(world), gathered(world);
    std::vector<std::vector<double>> values(world);
    const std::vector<int> owners = {world - 1, 0, world / 2};
    const auto errors = on_ranks(group, [&](int r) {
      const auto b = make_cpu_backend(&group.rank(r));
      Collectives& c = b->collectives();
      EXPECT_EQ(c.rank(), r);
      EXPECT_EQ(c.world(), world);
      // Sizes below, at and above the rank count, so that some ranks sum no elements.
      auto three = [&] { return std::vector<Tensor>{filled(*b, r, 1, 1), filled(*b, r, 3, 5), filled(*b, r, 1, 2)}; };
      std::vector<Tensor> ts = three();
      c.start_allreduce_sum(ts, "a");
      c.finish("a");
      for (const Tensor& t : ts) reduced[r].push_back(b->download(t));
      ts = three();
      c.start_reduce_scatter_sum(ts, owners, "b");
      c.finish("b");
      for (const Tensor& t : ts) scattered[r].push_back(b->download(t));
      ts = three();
      c.start_all_gather(ts, owners, "c");
      c.finish("c");
      for (const Tensor& t : ts) gathered[r].push_back(b->download(t));
      values[r] = {1e16, static_cast<double>(r) + 0.5};
      c.allreduce_sum(values[r], "d");
    });
    for (const std::string& e : errors) EXPECT_EQ(e, "");
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < 3; ++i) {
        for (int64_t e = 0; e < reduced[r][i].size(); ++e) {
          const size_t k = static_cast<size_t>(e);
          const float sum = in_rank_order(world, e);
          EXPECT_TRUE(bitwise_equal(reduced[r][i].data[k], sum)) << "rank " << r << " tensor " << i << " element " << e;
          // The owner gets the same sum; the others keep their own values.
          const float want = owners[i] == r ? sum : value(r, e);
          EXPECT_TRUE(bitwise_equal(scattered[r][i].data[k], want)) << "rank " << r << " tensor " << i;
          EXPECT_TRUE(bitwise_equal(gathered[r][i].data[k], value(owners[i], e))) << "rank " << r << " tensor " << i;
        }
      }
      double second = 0.5;
      for (int q = 1; q < world; ++q) second += q + 0.5;
      EXPECT_EQ(values[r], (std::vector<double>{1e16 * world, second}));
    }
  }
}

TEST(InProcessGroup, RanksCallingDifferentCollectivesAllFailNamingThem) {
  InProcessGroup group(3);
  const auto errors = on_ranks(group, [&](int r) {
    const auto b = make_cpu_backend(&group.rank(r));
    std::vector<Tensor> ts{filled(*b, r, 2, 2)};
    if (r == 2) b->collectives().start_reduce_scatter_sum(ts, {1}, "gradients of step 4");
    else b->collectives().start_allreduce_sum(ts, "gradients of step 4");
  });
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(errors[r], "rank " + std::to_string(r) +
                             ": rank 2 called the reduce-scatter of gradients of step 4 (sizes 4; owners 1) where rank 0 "
                             "called the all-reduce of gradients of step 4 (sizes 4)");
  // Out of order: another step.
  InProcessGroup two(2);
  const auto order = on_ranks(two, [&](int r) { two.rank(r).allreduce_sum(1.0, "loss of step " + std::to_string(r)); });
  EXPECT_NE(order[0].find("rank 1 called the all-reduce of loss of step 1 (1 values) where rank 0 called the all-reduce "
                          "of loss of step 0"),
            std::string::npos)
      << order[0];
}

TEST(InProcessGroup, AMissingRankTimesOutAndAbortStopsTheOthers) {
  InProcessGroup group(3, 0.05);
  const auto errors = on_ranks(group, [&](int r) {
    if (r == 2) return;  // never comes
    group.rank(r).allreduce_sum(1.0, "loss of step 7");
  });
  // The first to time out aborts the group; the other is woken by it.
  const bool first = errors[0].find("did not complete within 0.05 s; another rank may have died") != std::string::npos;
  EXPECT_NE(errors[first ? 0 : 1].find("the all-reduce of loss of step 7 (1 values) did not complete within 0.05 s"),
            std::string::npos)
      << errors[0] << " | " << errors[1];
  EXPECT_NE(errors[first ? 1 : 0].find("the in-process group was aborted"), std::string::npos)
      << errors[0] << " | " << errors[1];
  EXPECT_EQ(errors[2], "");
  // An aborted group refuses at once.
  EXPECT_NE(test::error_of([&] { group.rank(0).allreduce_sum(1.0, "x"); }).find("aborted"), std::string::npos);
}

}  // namespace
}  // namespace q2::model
