#include "train/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "common/error.h"
#include "eval/grad_error.h"
#include "train/checkpoint.h"

namespace q2::train {
namespace {

namespace fs = std::filesystem;

// Per process: ctest runs each test in a process of its own, in parallel.
fs::path test_root() { return fs::temp_directory_path() / ("q2_trainer_test_" + std::to_string(::getpid())); }

struct RemoveTestRoot {
  ~RemoveTestRoot() { fs::remove_all(test_root()); }
} remove_test_root_at_exit;

// A small prepared dataset shared by the tests in this file (built once per process).
const std::string& dataset_dir() {
  static const std::string dir = [] {
    const fs::path root = test_root();
    fs::remove_all(root);
    fs::create_directories(root);
    std::ofstream text(root / "corpus.txt");
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "quartet", "scale",
                           "model", "gradient", "hadamard", "rounding", "unbiased", "tensor"};
    uint32_t x = 12345;
    for (int doc = 0; doc < 400; ++doc) {
      for (int w = 0; w < 60; ++w) {
        x = x * 1103515245u + 12345u;
        text << words[(x >> 16) % 16] << (w % 12 == 11 ? ".\n" : " ");
      }
      text << "\n\n";
    }
    text.close();
    data::PrepareOptions o;
    o.corpus = (root / "corpus.txt").string();
    o.vocab = 300;
    o.out = (root / "data").string();
    o.val_fraction = 0.05;
    data::prepare(o, [](const std::string&) {});
    return o.out;
  }();
  return dir;
}

TrainConfig small_config(const std::string& out, const std::string& scheme) {
  TrainConfig c;
  c.data_dir = dataset_dir();
  c.out_dir = (test_root() / out).string();
  c.scheme = scheme;
  c.seq_len = 32;
  c.batch_size = 2;
  c.steps = 20;
  c.lr = 3e-3;
  c.eval_every = 10;
  c.eval_batches = 2;
  c.ckpt_every = 1000;
  c.log_every = 1000;
  return c;
}

void quiet(const std::string&) {}

TEST(Trainer, ResumingIsBitIdenticalAndLossFalls) {
  const TrainConfig full = small_config("full", "quartet2");
  const TrainSummary a = run_training(full, false, quiet);
  ASSERT_EQ(a.losses.size(), 20u);
  EXPECT_LT(a.losses.back(), a.losses.front());

  TrainConfig half = small_config("resumed", "quartet2");
  half.stop_at = 10;
  const TrainSummary b1 = run_training(half, false, quiet);
  ASSERT_EQ(b1.losses.size(), 10u);
  half.stop_at = 0;
  const TrainSummary b2 = run_training(half, true, quiet);
  ASSERT_EQ(b2.losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(b1.losses[i], a.losses[i]) << "step " << i + 1;
    EXPECT_EQ(b2.losses[i], a.losses[10 + i]) << "step " << 11 + i;
  }
  EXPECT_EQ(b2.val.loss, a.val.loss);
}

TEST(Trainer, DumpsLinearOperandsThatGradErrorLoads) {
  TrainConfig c = small_config("dump", "quartet2");
  c.steps = 4;
  c.dump_every = 2;
  run_training(c, false, quiet);
  const model::ModelConfig mc = model::preset(c.preset, 300, c.seq_len);
  for (const char* step : {"step2", "step4"}) {
    const fs::path d = fs::path(c.out_dir) / "tensors" / step;
    const auto last = "layers." + std::to_string(mc.n_layers - 1) + ".feed_forward.w3";
    for (const std::string& lin : {std::string("layers.0.attention.wqkv"), last}) {
      const eval::LayerOperands ops = eval::load_operands((d / lin).string());
      EXPECT_EQ(ops.x.rows, c.batch_size * c.seq_len) << lin;
      EXPECT_EQ(ops.w.cols, ops.x.cols) << lin;
    }
    EXPECT_FALSE(fs::exists(d / "layers.1.attention.wo")) << "only the first and last layer are dumped";
  }
  EXPECT_FALSE(fs::exists(fs::path(c.out_dir) / "tensors" / "step1"));
}

TEST(Trainer, NaNStopsNamingTheStepAndKeepsTheLastCheckpoint) {
  TrainConfig c = small_config("nan", "bf16");
  c.ckpt_every = 1;
  c.lr = 1e30;  // the first update blows the weights up: step 2's loss is not finite
  c.clip = 0;
  try {
    run_training(c, false, quiet);
    FAIL() << "training should have stopped";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("training stopped at step 2"), std::string::npos) << m;
    EXPECT_NE(m.find("not finite"), std::string::npos) << m;
    EXPECT_NE(m.find("the last good checkpoint is"), std::string::npos) << m;
  }
  // The checkpoint left behind is intact and from before the failure.
  const CheckpointInfo info = read_checkpoint_info(checkpoint_path(c));
  EXPECT_EQ(info.step, 1);
}

TEST(Trainer, ResumeRejectsAnotherConfigAndMissingData) {
  TrainConfig c = small_config("mismatch", "bf16");
  c.steps = 2;
  run_training(c, false, quiet);
  TrainConfig other = c;
  other.scheme = "quartet2";
  try {
    run_training(other, true, quiet);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another configuration"), std::string::npos);
  }
  TrainConfig nodata = c;
  nodata.data_dir = "/nonexistent/q2data";
  EXPECT_THROW(run_training(nodata, false, quiet), Error);
}

}  // namespace
}  // namespace q2::train
