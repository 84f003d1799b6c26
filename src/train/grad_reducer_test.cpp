#include "train/grad_reducer.h"

#include <gtest/gtest.h>

#include <map>

#include "common/error_test_util.h"
#include "model/collectives.h"
#include "quant/philox.h"
#include "quant/seeds.h"

namespace q2::train {
namespace {

using model::Tensor;

// The collectives of one rank, recording what is started: which tensors, their values at that
// moment, their owners (reduce-scatter) and during which phase (the micro-batch whose backward
// runs, or -1 in finish()).
class Recording final : public model::Collectives {
 public:
  struct Bucket {
    std::vector<const void*> tensors;
    std::vector<Matrix> values;
    std::vector<int> owners;
    size_t bytes = 0;
    int phase = 0;
  };
  std::vector<Bucket> buckets;
  int finishes = 0, phase = 0, all_reduces = 0, reduce_scatters = 0;

  int rank() const override { return 0; }
  int world() const override { return 3; }
  void start_allreduce_sum(const std::vector<Tensor>& ts, const std::string& what) override {
    ++all_reduces;
    record(ts, {}, what);
  }
  void start_reduce_scatter_sum(const std::vector<Tensor>& ts, const std::vector<int>& owners,
                                const std::string& what) override {
    ++reduce_scatters;
    record(ts, owners, what);
  }
  void start_all_gather(const std::vector<Tensor>&, const std::vector<int>&, const std::string&) override {
    ADD_FAILURE() << "the gradients are not all-gathered";
  }
  void finish(const std::string&) override { ++finishes; }
  void allreduce_sum(std::vector<double>&, const std::string&) override {}

 private:
  void record(const std::vector<Tensor>& ts, const std::vector<int>& owners, const std::string& what) {
    EXPECT_EQ(what, "gradients of step 1");
    Bucket b;
    b.phase = phase;
    b.owners = owners;
    for (const Tensor& t : ts) {
      b.tensors.push_back(t.data);
      b.values.push_back(cpu_->download(t));
      b.bytes += static_cast<size_t>(t.size()) * sizeof(float);
    }
    buckets.push_back(std::move(b));
  }
  std::unique_ptr<model::Backend> cpu_ = model::make_cpu_backend();
};

// Two layers under quartet2 (its seeded stochastic backward included), tensors of 0.5 to
// 192 KiB.
model::ModelConfig small() {
  return {.preset = "small", .n_layers = 2, .d_model = 128, .n_heads = 2, .d_ff = 128, .vocab = 40, .seq_len = 64};
}

std::vector<uint32_t> tokens(uint64_t seed) {
  std::vector<uint32_t> t(2 * 64);
  for (size_t i = 0; i < t.size(); ++i) t[i] = philox::word(seed, philox::kData, i) % 40;
  return t;
}

// `micros` micro-batches of forward and backward, each backward given `hook(micro)`; returns
// the gradients after the last.
std::vector<Matrix> run(model::Transformer& m, int micros,
                        const std::function<model::Transformer::GradsReady(int)>& hook) {
  m.zero_grads();
  for (int micro = 0; micro < micros; ++micro) {
    m.forward(tokens(2 * micro), tokens(2 * micro + 1), 2, 64);
    m.backward(seeds::backward_call(7, micro), 0.01f, hook(micro));
  }
  std::vector<Matrix> g;
  for (const Tensor& t : m.grads()) g.push_back(m.backend().download(t));
  return g;
}

// small() with nanochat's options and a head tied to the embedding: no norm gains, the
// lambdas between the blocks and the embedding, the embedding's gradient final only at the end.
model::ModelConfig nanochat_small() {
  model::ModelConfig c = model::nanochat_architecture(small());
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.tie_embeddings = true;
  c.window_pattern = "SL";
  return c;
}

// The gradients of a separate model without hooks: the values every handed-over tensor
// must already hold.
std::vector<Matrix> reference(int micros, const model::ModelConfig& config) {
  const auto cpu = model::make_cpu_backend();
  model::Transformer m(config, linear::scheme_by_name("quartet2"), *cpu);
  m.init(5);
  return run(m, micros, [](int) { return nullptr; });
}

// Runs a step of `micros` micro-batches through a GradReducer of `bucket_mb` and `shard` on a CPU
// backend with recording collectives and checks what every bucket of it must satisfy; returns the
// recording.
Recording step(double bucket_mb, int micros, const model::ModelConfig& config = small(), const Shard& shard = {}) {
  Recording rec;
  const auto cpu = model::make_cpu_backend(&rec);
  model::Transformer m(config, linear::scheme_by_name("quartet2"), *cpu);
  m.init(5);
  GradReducer reducer(m, bucket_mb, shard);
  run(m, micros, [&](int micro) {
    rec.phase = micro;
    return reducer.hook(micro, micros, "gradients of step 1");
  });
  rec.phase = -1;
  reducer.finish();
  EXPECT_EQ(rec.finishes, 1);
  // Sharded, every bucket is a reduce-scatter; else an all-reduce.
  EXPECT_EQ(shard.sharded() ? rec.reduce_scatters : rec.all_reduces, static_cast<int>(rec.buckets.size()));

  std::map<const void*, size_t> index;
  for (size_t i = 0; i < m.grads().size(); ++i) index[m.grads()[i].data] = i;
  const std::vector<Matrix> want = reference(micros, config);
  std::vector<int> times(m.grads().size(), 0);
  const int top = static_cast<int>(config.n_layers);  // the LM head and final norm: above the blocks
  int last_layer = top;
  for (const Recording::Bucket& b : rec.buckets) {
    // Only the last micro-batch's backward (or finish) hands gradients over.
    EXPECT_TRUE(b.phase == micros - 1 || b.phase == -1) << "phase " << b.phase;
    if (bucket_mb > 0) {
      EXPECT_TRUE(b.bytes <= bucket_mb * (1 << 20) || b.tensors.size() == 1) << b.bytes << " bytes";
    }
    for (size_t k = 0; k < b.tensors.size(); ++k) {
      const auto it = index.find(b.tensors[k]);
      if (it == index.end()) {
        ADD_FAILURE() << "handed over a tensor that is not a gradient";
        continue;
      }
      const size_t i = it->second;
      ++times[i];
      if (shard.sharded()) {
        EXPECT_EQ(b.owners.at(k), shard.owner[i]) << m.params()[i].name;
      }
      // Already final when handed over: bit for bit the full backward's value.
      EXPECT_EQ(b.values[k].data, want[i].data) << m.params()[i].name;
      // Reverse layer order.
      const std::string& name = m.params()[i].name;
      const int layer = name.rfind("layers.", 0) == 0                  ? std::stoi(name.substr(7))
                        : name == "resid_lambdas" || name == "x0_lambdas" ? -1  // below layer 0
                        : name == "tok_embeddings.weight"                 ? -2
                                                                          : top;
      EXPECT_LE(layer, last_layer) << name;
      last_layer = layer;
    }
  }
  for (size_t i = 0; i < times.size(); ++i) EXPECT_EQ(times[i], 1) << m.params()[i].name;
  return rec;
}

TEST(GradReducer, BucketsFinalGradientsOnceEachWithinTheLimit) {
  // 100 KiB: wqkv (192 KiB) and w12 (128 KiB) form buckets of their own, the others share.
  const Recording rec = step(100.0 / 1024, 1);
  size_t alone = 0, shared = 0, during_backward = 0;
  for (const auto& b : rec.buckets) {
    (b.bytes > 100 * 1024 ? alone : shared) += 1;
    during_backward += b.phase == 0;
  }
  EXPECT_EQ(alone, 4u);
  EXPECT_GE(shared, 4u);
  EXPECT_GE(during_backward, rec.buckets.size() - 1);  // at most the last one waits for finish()
}

TEST(GradReducer, OnlyTheLastMicroBatchReduces) {
  const Recording rec = step(100.0 / 1024, 3);
  EXPECT_GT(rec.buckets.size(), 1u);
}

TEST(GradReducer, ZeroMeansOneBucketAfterBackward) {
  const Recording rec = step(0, 2);
  ASSERT_EQ(rec.buckets.size(), 1u);
  EXPECT_EQ(rec.buckets[0].phase, -1);
  EXPECT_EQ(rec.buckets[0].tensors.size(), 1u + 6u * 2u + 2u);  // embedding, 2 blocks, final norm and head
}

TEST(GradReducer, NanochatOptionsHandEveryGradientOverOnceWhenFinal) {
  const Recording rec = step(100.0 / 1024, 1, nanochat_small());
  EXPECT_GT(rec.buckets.size(), 2u);
  const Recording one = step(0, 1, nanochat_small());
  ASSERT_EQ(one.buckets.size(), 1u);
  EXPECT_EQ(one.buckets[0].tensors.size(), 1u + 4u * 2u + 2u);  // embedding (= head), 2 blocks, 2 lambdas
}

// ZeRO-1: the same buckets, each reduce-scattered to the owners of its parameters.
TEST(GradReducer, ShardedBucketsAreReduceScatteredToTheOwners) {
  std::vector<uint64_t> sizes;
  for (const model::Param& p : model::Transformer::param_shapes(small()))
    sizes.push_back(static_cast<uint64_t>(p.value.size()));
  const Shard shard{balance_owners(sizes, 3), 1};
  const Recording all = step(100.0 / 1024, 2), sharded = step(100.0 / 1024, 2, small(), shard);
  ASSERT_EQ(sharded.buckets.size(), all.buckets.size());
  for (size_t b = 0; b < all.buckets.size(); ++b) {
    EXPECT_EQ(sharded.buckets[b].bytes, all.buckets[b].bytes);
    EXPECT_EQ(sharded.buckets[b].phase, all.buckets[b].phase);
  }
  EXPECT_EQ(step(0, 1, small(), shard).buckets.size(), 1u);
}

TEST(GradReducer, MissingGradientIsAnError) {
  Recording rec;
  const auto cpu = model::make_cpu_backend(&rec);
  model::Transformer m(small(), linear::scheme_by_name("quartet2"), *cpu);
  GradReducer reducer(m, 25);
  const auto hook = reducer.hook(0, 1, "gradients of step 1");
  m.zero_grads();
  m.forward(tokens(0), tokens(1), 2, 64);
  m.backward(1, 1.0f, [&](size_t first, size_t count) {
    if (first > 0) hook(first, count);  // drops the embedding
  });
  EXPECT_NE(test::error_of([&] { reducer.finish(); }).find("tok_embeddings.weight: backward never handed"),
            std::string::npos);
}

}  // namespace
}  // namespace q2::train
