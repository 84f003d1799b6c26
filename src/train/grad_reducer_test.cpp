#include "train/grad_reducer.h"

#include <gtest/gtest.h>

#include <map>

#include "common/error_test_util.h"
#include "quant/philox.h"
#include "quant/seeds.h"

namespace q2::train {
namespace {

using model::Tensor;

// The CPU backend, recording what is handed to start_allreduce_sum: which tensors, their
// values at that moment, and during which phase (the micro-batch whose backward runs, or -1
// in finish()).
class Recording final : public model::Backend {
 public:
  struct Bucket {
    std::vector<const void*> tensors;
    std::vector<Matrix> values;
    size_t bytes = 0;
    int phase = 0;
  };
  std::vector<Bucket> buckets;
  int finishes = 0, phase = 0;

  void start_allreduce_sum(const std::vector<Tensor>& ts, const std::string& what) override {
    EXPECT_EQ(what, "gradients of step 1");
    Bucket b;
    b.phase = phase;
    for (const Tensor& t : ts) {
      b.tensors.push_back(t.data);
      b.values.push_back(cpu_->download(t));
      b.bytes += static_cast<size_t>(t.size()) * sizeof(float);
    }
    buckets.push_back(std::move(b));
  }
  void finish_allreduces(const std::string&) override { ++finishes; }

  std::string name() const override { return "recording"; }
  uint64_t free_memory_bytes() override { return cpu_->free_memory_bytes(); }
  Tensor alloc(int64_t r, int64_t c, model::Role role) override { return cpu_->alloc(r, c, role); }
  void upload(const Matrix& src, Tensor& dst) override { cpu_->upload(src, dst); }
  Matrix download(const Tensor& t) override { return cpu_->download(t); }
  Tensor clone(const Tensor& t) override { return cpu_->clone(t); }
  void zero(Tensor& t) override { cpu_->zero(t); }
  std::unique_ptr<model::LinearOp> make_linear(const linear::Scheme& s, const std::string& n) override {
    return cpu_->make_linear(s, n);
  }
  void embedding_forward(const Tensor& table, const std::vector<uint32_t>& ids, Tensor& out) override {
    cpu_->embedding_forward(table, ids, out);
  }
  void embedding_backward(const Tensor& dout, const std::vector<uint32_t>& ids, Tensor& dtable) override {
    cpu_->embedding_backward(dout, ids, dtable);
  }
  void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    cpu_->rmsnorm_forward(x, w, eps, y, rstd);
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    cpu_->rmsnorm_backward(dy, x, w, rstd, dx, dw);
  }
  void rope(Tensor& x, int64_t col0, int64_t heads, int64_t hd, int64_t seq, double theta, int dir) override {
    cpu_->rope(x, col0, heads, hd, seq, theta, dir);
  }
  void attention_forward(const Tensor& qkv, const model::AttentionDims& a, Tensor& out, Tensor& cache) override {
    cpu_->attention_forward(qkv, a, out, cache);
  }
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& cache, const model::AttentionDims& a,
                          Tensor& dqkv) override {
    cpu_->attention_backward(dout, qkv, cache, a, dqkv);
  }
  void swiglu_forward(const Tensor& h12, Tensor& g) override { cpu_->swiglu_forward(h12, g); }
  void swiglu_backward(const Tensor& dg, const Tensor& h12, Tensor& dh12) override {
    cpu_->swiglu_backward(dg, h12, dh12);
  }
  void head_rmsnorm_forward(Tensor& x, int64_t col0, int64_t heads, int64_t hd, double eps, Tensor& rstd) override {
    cpu_->head_rmsnorm_forward(x, col0, heads, hd, eps, rstd);
  }
  void head_rmsnorm_backward(Tensor& dy, const Tensor& y, int64_t col0, int64_t heads, int64_t hd,
                             const Tensor& rstd) override {
    cpu_->head_rmsnorm_backward(dy, y, col0, heads, hd, rstd);
  }
  void relu2_forward(const Tensor& h, Tensor& g) override { cpu_->relu2_forward(h, g); }
  void relu2_backward(const Tensor& dg, const Tensor& h, Tensor& dh) override { cpu_->relu2_backward(dg, h, dh); }
  void residual_mix_forward(const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                            Tensor& y) override {
    cpu_->residual_mix_forward(x, x0, a, b, i, y);
  }
  void residual_mix_backward(Tensor& dxy, const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                             Tensor& dx0, Tensor& da, Tensor& db) override {
    cpu_->residual_mix_backward(dxy, x, x0, a, b, i, dx0, da, db);
  }
  void softcap_forward(Tensor& logits, float cap) override { cpu_->softcap_forward(logits, cap); }
  void softcap_backward(Tensor& dlogits, const Tensor& capped, float cap) override {
    cpu_->softcap_backward(dlogits, capped, cap);
  }
  void add_inplace(Tensor& a, const Tensor& b) override { cpu_->add_inplace(a, b); }
  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha, bool acc) override {
    cpu_->matmul(a, ta, b, tb, c, alpha, acc);
  }
  double cross_entropy(const Tensor& logits, const std::vector<uint32_t>& t, Tensor* d, float scale) override {
    return cpu_->cross_entropy(logits, t, d, scale);
  }
  double sum_squares(const Tensor& t) override { return cpu_->sum_squares(t); }
  void scale(Tensor& t, float s) override { cpu_->scale(t, s); }
  void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const model::AdamWHyper& h, bool decay) override {
    cpu_->adamw(w, g, m, v, h, decay);
  }
  void muon(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const std::vector<int64_t>& blocks,
            const model::MuonHyper& h) override {
    cpu_->muon(w, g, m, v, blocks, h);
  }

 private:
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

// Runs a step of `micros` micro-batches through a GradReducer of `bucket_mb` on the recording
// backend and checks what every bucket of it must satisfy; returns the recording.
Recording step(double bucket_mb, int micros, const model::ModelConfig& config = small()) {
  Recording rec;
  model::Transformer m(config, linear::scheme_by_name("quartet2"), rec);
  m.init(5);
  GradReducer reducer(m, bucket_mb);
  run(m, micros, [&](int micro) {
    rec.phase = micro;
    return reducer.hook(micro, micros, "gradients of step 1");
  });
  rec.phase = -1;
  reducer.finish();
  EXPECT_EQ(rec.finishes, 1);

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

TEST(GradReducer, MissingGradientIsAnError) {
  Recording rec;
  model::Transformer m(small(), linear::scheme_by_name("quartet2"), rec);
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
