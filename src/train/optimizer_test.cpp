// Muon with AdamW as nanochat pairs them (train/optimizer.cpp): the parameter groups, the
// per-step hyper-parameters, one step routed to the right update, and clipping inside either
// update. AdamW's own tests are in config_test.cpp; Muon's numerics in model/cpu_muon_test.cpp.
#include "train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error_test_util.h"
#include "model/muon.h"
#include "quant/distributions.h"

namespace q2::train {
namespace {

model::ModelConfig one_layer() {
  model::ModelConfig c = model::preset("tiny", 64, 32);
  c.n_layers = 1;
  return c;
}

TEST(Muon, GroupsAreNanochatsWithFusedWeightsSplit) {
  const auto backend = model::make_cpu_backend();
  model::Transformer m(one_layer(), linear::scheme_by_name("bf16"), *backend);
  std::map<std::string, MuonGroup> g;
  for (const model::Param& p : m.params()) g[p.name] = muon_group(p, m.config());
  EXPECT_EQ(g.at("tok_embeddings.weight").group, ParamGroup::kEmbedding);
  EXPECT_EQ(g.at("output.weight").group, ParamGroup::kHead);
  EXPECT_EQ(g.at("norm.weight").group, ParamGroup::kScalar);
  EXPECT_EQ(g.at("layers.0.attention_norm.weight").group, ParamGroup::kScalar);
  model::Param lambdas{"resid_lambdas", backend->alloc(1, 1, model::Role::kParam), false};
  EXPECT_EQ(muon_group(lambdas, m.config()).group, ParamGroup::kResidLambdas);
  lambdas.name = "x0_lambdas";
  EXPECT_EQ(muon_group(lambdas, m.config()).group, ParamGroup::kX0Lambdas);
  EXPECT_EQ(g.at("layers.0.attention.wqkv.weight").blocks, (std::vector<int64_t>{256, 256, 256}));  // q | k | v
  EXPECT_EQ(g.at("layers.0.attention.wo.weight").blocks, (std::vector<int64_t>{256}));
  EXPECT_EQ(g.at("layers.0.feed_forward.w12.weight").blocks, (std::vector<int64_t>{768, 768}));  // gate | up
  EXPECT_EQ(g.at("layers.0.feed_forward.w3.weight").blocks, (std::vector<int64_t>{256}));
  for (const char* n : {"layers.0.attention.wqkv.weight", "layers.0.feed_forward.w3.weight"})
    EXPECT_EQ(g.at(n).group, ParamGroup::kMatrix) << n;
  // Grouped-query attention: q keeps d_model rows, k and v share the rest.
  model::Param gqa{"layers.3.attention.wqkv.weight", backend->alloc(512, 256, model::Role::kParam), true};
  EXPECT_EQ(muon_group(gqa, m.config()).blocks, (std::vector<int64_t>{256, 128, 128}));
  model::Param odd{"layers.3.attention.wqkv.weight", backend->alloc(257, 256, model::Role::kParam), true};
  EXPECT_NE(test::error_of([&] { muon_group(odd, m.config()); }).find("257 rows, not d_model 256 (q) plus two equal"),
            std::string::npos);
}

TEST(Muon, MomentumWarmsUpAndWeightDecayFallsToZero) {
  TrainConfig c;
  c.steps = 1000;
  c.matrix_lr = 0.02;
  EXPECT_DOUBLE_EQ(Muon::hyper(c, 1.0, 1).momentum, 0.85);  // nanochat: 0.85 -> 0.95 over 300 steps
  EXPECT_NEAR(Muon::hyper(c, 1.0, 151).momentum, 0.90, 1e-12);
  EXPECT_NEAR(Muon::hyper(c, 1.0, 301).momentum, 0.95, 1e-12);
  EXPECT_NEAR(Muon::hyper(c, 1.0, 900).momentum, 0.95, 1e-12);
  EXPECT_DOUBLE_EQ(Muon::hyper(c, 1.0, 1).weight_decay, 0.2);  // 0.2 (1 - step / steps)
  EXPECT_NEAR(Muon::hyper(c, 1.0, 501).weight_decay, 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(Muon::hyper(c, 0.5, 1).lr, 0.01);
  EXPECT_EQ(Muon::hyper(c, 1.0, 1).ortho, model::MuonOrtho::kQuintic);
  c.muon_momentum_warmup = 0;
  c.muon_ns = "polar_express";
  EXPECT_DOUBLE_EQ(Muon::hyper(c, 1.0, 1).momentum, 0.95);
  EXPECT_EQ(Muon::hyper(c, 1.0, 1).ortho, model::MuonOrtho::kPolarExpress);
  // AdamW's rates scale by 1 / sqrt(d_model / 768).
  model::ModelConfig mc;
  mc.d_model = 768;
  EXPECT_DOUBLE_EQ(Muon::adamw_lr(c, ParamGroup::kEmbedding, mc), 0.3);
  EXPECT_DOUBLE_EQ(Muon::adamw_lr(c, ParamGroup::kHead, mc), 0.004);
  mc.d_model = 256;
  EXPECT_NEAR(Muon::adamw_lr(c, ParamGroup::kEmbedding, mc), 0.3 * std::sqrt(3.0), 1e-12);
  EXPECT_DOUBLE_EQ(Muon::adamw_lr(c, ParamGroup::kScalar, mc), c.scalar_lr);
  // nanochat's lambdas: resid at a hundredth of the scalar rate, x0 at it with betas (0.96, 0.95).
  EXPECT_DOUBLE_EQ(Muon::adamw_lr(c, ParamGroup::kResidLambdas, mc), c.scalar_lr / 100);
  EXPECT_DOUBLE_EQ(Muon::adamw_lr(c, ParamGroup::kX0Lambdas, mc), c.scalar_lr);
  EXPECT_EQ(Muon::adamw_betas(c, ParamGroup::kX0Lambdas), std::make_pair(0.96, 0.95));
  EXPECT_EQ(Muon::adamw_betas(c, ParamGroup::kResidLambdas), std::make_pair(c.beta1, c.beta2));
}

TEST(Muon, StepSendsMatricesToMuonAndTheRestToAdamW) {
  const auto backend = model::make_cpu_backend();
  model::Transformer m(one_layer(), linear::scheme_by_name("bf16"), *backend);
  m.init(3);
  for (size_t i = 0; i < m.grads().size(); ++i)
    backend->upload(quant::random_matrix(m.grads()[i].rows, m.grads()[i].cols, quant::Dist::kGaussian, 50 + i, 1e-2),
                    m.grads()[i]);
  std::vector<Matrix> before;
  for (const model::Param& p : m.params()) before.push_back(backend->download(p.value));
  TrainConfig c;
  c.optimizer = "muon";
  Muon opt(*backend, m.params(), m.config());
  opt.step(m.params(), m.grads(), 0.5 * c.lr, c, 1, 1.0f);  // the schedule at half its peak
  EXPECT_DOUBLE_EQ(opt.shown_lr(0.5 * c.lr, c), 0.5 * c.matrix_lr);
  for (size_t i = 0; i < m.params().size(); ++i) {
    const model::Param& p = m.params()[i];
    const Matrix after = backend->download(p.value), g = backend->download(m.grads()[i]);
    const MuonGroup grp = opt.groups()[i];
    if (grp.group == ParamGroup::kMatrix) {
      // The same as the backend's Muon on fresh state, with the step's hyper-parameters.
      model::Tensor w = backend->alloc(p.value.rows, p.value.cols, model::Role::kParam);
      model::Tensor mom = backend->alloc(p.value.rows, p.value.cols, model::Role::kParam);
      model::Tensor v = backend->alloc(1, model::muon_second_moment_size(grp.blocks, p.value.cols), model::Role::kParam);
      backend->upload(before[i], w);
      backend->muon(w, m.grads()[i], mom, v, grp.blocks, Muon::hyper(c, 0.5, 1));
      EXPECT_EQ(backend->download(w).data, after.data) << p.name;
    } else {
      // Adam's first step: lr g / (|g| + eps), no weight decay, at the group's rate times 0.5.
      const double lr = 0.5 * Muon::adamw_lr(c, grp.group, m.config());
      for (int64_t j = 0; j < after.size(); j += 97)
        EXPECT_NEAR(after.data[j], before[i].data[j] - lr * g.data[j] / (std::abs(g.data[j]) + c.eps), 1e-6 + 1e-5 * lr)
            << p.name << " " << j;
    }
  }
  // The state checkpoints store: every parameter's first tensor, then every second one.
  const std::vector<OptimizerState> s = opt.state();
  ASSERT_EQ(s.size(), 2 * m.params().size());
  EXPECT_EQ(s[1].name, "layers.0.attention_norm.weight:adamw.m");
  EXPECT_EQ(s[2].name, "layers.0.attention.wqkv.weight:muon.momentum");
  EXPECT_EQ(s[m.params().size() + 2].name, "layers.0.attention.wqkv.weight:muon.second_moment");
  EXPECT_EQ(s[m.params().size() + 2].tensor->cols, 3 * 256);
}

// Clipping happens inside the update: an update with grad_scale s gives, bit for bit, the
// weights and state of the same update of gradients scaled by s beforehand (Backend::scale, the
// pass it replaces). Two steps, so that the moments carry s into a later update too.
TEST(Optimizer, GradScaleEqualsScalingTheGradientsFirst) {
  for (const char* name : {"adamw", "muon"}) {
    SCOPED_TRACE(name);
    const auto backend = model::make_cpu_backend();
    TrainConfig c;
    c.optimizer = name;
    model::Transformer fused(one_layer(), linear::scheme_by_name("bf16"), *backend),
        first(one_layer(), linear::scheme_by_name("bf16"), *backend);
    fused.init(3);
    first.init(3);
    const auto opt_fused = make_optimizer(c, *backend, fused.params(), fused.config()),
               opt_first = make_optimizer(c, *backend, first.params(), first.config());
    for (int64_t t = 1; t <= 2; ++t) {
      const float s = t == 1 ? 0.37f : 0.81f;
      for (size_t i = 0; i < fused.grads().size(); ++i) {
        const Matrix g = quant::random_matrix(fused.grads()[i].rows, fused.grads()[i].cols, quant::Dist::kStudent3,
                                              60 + 10 * t + i, 1e-2);
        backend->upload(g, fused.grads()[i]);
        backend->upload(g, first.grads()[i]);
        backend->scale(first.grads()[i], s);
      }
      opt_fused->step(fused.params(), fused.grads(), c.lr, c, t, s);
      opt_first->step(first.params(), first.grads(), c.lr, c, t, 1.0f);
    }
    for (size_t i = 0; i < fused.params().size(); ++i)
      EXPECT_EQ(backend->download(fused.params()[i].value).data, backend->download(first.params()[i].value).data)
          << fused.params()[i].name;
    const std::vector<OptimizerState> a = opt_fused->state(), b = opt_first->state();
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(backend->download(*a[i].tensor).data, backend->download(*b[i].tensor).data) << a[i].name;
  }
}

TEST(Optimizer, ClipScaleIsClipOverNormAboveTheClip) {
  EXPECT_EQ(clip_scale(1.0, 0.5), 1.0f);
  EXPECT_EQ(clip_scale(1.0, 1.0), 1.0f);
  EXPECT_EQ(clip_scale(1.0, 4.0), 0.25f);
  EXPECT_EQ(clip_scale(2.0, 3.0), static_cast<float>(2.0 / 3.0));
  EXPECT_EQ(clip_scale(0.0, 1e9), 1.0f);  // train.clip = 0: no clipping
}

TEST(Muon, MakeOptimizerFollowsTheConfig) {
  const auto backend = model::make_cpu_backend();
  model::Transformer m(one_layer(), linear::scheme_by_name("bf16"), *backend);
  TrainConfig c;
  EXPECT_EQ(make_optimizer(c, *backend, m.params(), m.config())->name(), "adamw");
  c.optimizer = "muon";
  EXPECT_EQ(make_optimizer(c, *backend, m.params(), m.config())->name(), "muon");
}

}  // namespace
}  // namespace q2::train
