#include "train/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "train/optimizer.h"

namespace q2::train {
namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p.string();
}

TEST(TrainConfig, FileThenOverridesWithTypes) {
  const std::string f = write_temp("q2_cfg_ok.toml", "[train]\nlr = 0.002\nsteps = 50\n[method]\nscheme = \"nvidia\"\n");
  const TrainConfig c = load_config(f, {"--train.steps=70", "--model.preset=30m", "--train.lr=1e-4"});
  EXPECT_EQ(c.steps, 70);
  EXPECT_EQ(c.scheme, "nvidia");
  EXPECT_EQ(c.preset, "30m");
  EXPECT_DOUBLE_EQ(c.lr, 1e-4);
  EXPECT_EQ(from_json(to_json(c)).steps, 70);  // round trip
}

TEST(TrainConfig, BadInputIsNamed) {
  auto msg = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg([] { load_config("", {"--train.lrate=1"}); }).find("unknown option 'train.lrate'"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.steps=ten"}); }).find("expects a number"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.steps=1.5"}); }).find("train.steps"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"train.steps"}); }).find("--section.key=value"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.schedule=linear"}); }).find("cosine"), std::string::npos);
  EXPECT_NE(msg([] { load_config("/nonexistent/q2.toml", {}); }).find("/nonexistent/q2.toml"), std::string::npos);
  const std::string bad = write_temp("q2_cfg_bad.toml", "[train\nlr = 1\n");
  EXPECT_NE(msg([&] { load_config(bad, {}); }).find("line 1"), std::string::npos);
}

TEST(Schedule, CosineAndWsdShapes) {
  TrainConfig c;
  c.steps = 1000;
  c.lr = 1e-3;
  c.warmup_frac = 0.1;
  c.min_lr_ratio = 0.1;
  EXPECT_NEAR(learning_rate(c, 0), 1e-5, 1e-6);        // starts near lr/100
  EXPECT_NEAR(learning_rate(c, 99), 1e-3, 1e-12);      // peak at the end of warmup
  EXPECT_NEAR(learning_rate(c, 999), 1e-4, 1e-12);     // ends at lr * min_lr_ratio
  EXPECT_GT(learning_rate(c, 300), learning_rate(c, 600));
  c.schedule = "wsd";
  c.decay_frac = 0.2;
  EXPECT_DOUBLE_EQ(learning_rate(c, 500), 1e-3);  // stable phase
  EXPECT_NEAR(learning_rate(c, 999), 1e-4, 1e-12);
  EXPECT_NEAR(learning_rate(c, 800), 1e-3 - 0.9e-3 / 200, 1e-12);  // decay starts at 80%
  EXPECT_NEAR(learning_rate(c, 899), 0.55e-3, 1e-12);
}

TEST(AdamW, FirstStepMovesEachWeightByLrAgainstTheGradientSign) {
  const auto backend = model::make_cpu_backend();
  std::vector<model::Param> p = {{"w", backend->alloc(1, 3, model::Role::kParam), true}, {"n", backend->alloc(1, 2, model::Role::kParam), false}};
  auto set = [&](model::Tensor& t, std::vector<float> v) {
    Matrix m(t.rows, t.cols);
    m.data = std::move(v);
    backend->upload(m, t);
  };
  set(p[0].value, {1.0f, -2.0f, 0.5f});
  set(p[1].value, {1.0f, 1.0f});
  std::vector<model::Tensor> g = {backend->alloc(1, 3, model::Role::kParam), backend->alloc(1, 2, model::Role::kParam)};
  set(g[0], {0.3f, -4.0f, 1e-3f});
  set(g[1], {-2.0f, 0.0f});
  AdamW opt(*backend, p);
  TrainConfig c;
  c.weight_decay = 0.1;
  opt.step(p, g, 0.01, c, 1);
  // Bias-corrected Adam's first step is lr * sign(g) (up to eps); decay only on "w".
  const Matrix w = backend->download(p[0].value), n = backend->download(p[1].value);
  EXPECT_NEAR(w.data[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(w.data[1], -2.0 * (1 - 0.001) + 0.01, 1e-6);
  EXPECT_NEAR(n.data[0], 1.0 + 0.01, 1e-6);
  EXPECT_EQ(n.data[1], 1.0f);
  EXPECT_NEAR(grad_norm(*backend, g), std::sqrt(0.09 + 16 + 1e-6 + 4), 1e-6);
}

}  // namespace
}  // namespace q2::train
