#include "train/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <unistd.h>

#include "common/error.h"
#include "common/error_test_util.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "eval/grad_error.h"
#include "model/linear_schemes.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/hf_export.h"
#include "train/test_dataset.h"

namespace q2::train {
namespace {

namespace fs = std::filesystem;
using test::dataset_dir;
using test::test_root;

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
  const TrainSummary a = run_training(full, StartMode::kFresh, quiet);
  ASSERT_EQ(a.losses.size(), 20u);
  EXPECT_LT(a.losses.back(), a.losses.front());

  TrainConfig half = small_config("resumed", "quartet2");
  half.stop_at = 10;
  const TrainSummary b1 = run_training(half, StartMode::kFresh, quiet);
  ASSERT_EQ(b1.losses.size(), 10u);
  half.stop_at = 0;
  const TrainSummary b2 = run_training(half, StartMode::kResume, quiet);
  ASSERT_EQ(b2.losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(b1.losses[i], a.losses[i]) << "step " << i + 1;
    EXPECT_EQ(b2.losses[i], a.losses[10 + i]) << "step " << 11 + i;
  }
  EXPECT_EQ(b2.val.loss, a.val.loss);
}

// Muon on the CPU orthogonalizes the tiny preset's 28 block matrices every step (~22 GFLOP):
// these tests take few steps.
TrainConfig muon_config(const std::string& out, int64_t steps) {
  TrainConfig c = small_config(out, "bf16");
  c.optimizer = "muon";
  c.steps = steps;
  c.eval_every = steps;
  return c;
}

TEST(Trainer, MuonResumesBitIdenticallyAndLossFalls) {
  const TrainSummary a = run_training(muon_config("muon_full", 4), StartMode::kFresh, quiet);
  ASSERT_EQ(a.losses.size(), 4u);
  EXPECT_LT(a.losses.back(), a.losses.front());
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(muon_config("muon_full", 4))).optimizer, "muon");

  TrainConfig half = muon_config("muon_resumed", 4);
  half.stop_at = 2;
  const TrainSummary b1 = run_training(half, StartMode::kFresh, quiet);
  half.stop_at = 0;
  const TrainSummary b2 = run_training(half, StartMode::kResume, quiet);
  ASSERT_EQ(b1.losses.size(), 2u);
  ASSERT_EQ(b2.losses.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b1.losses[i], a.losses[i]) << "step " << i + 1;
    EXPECT_EQ(b2.losses[i], a.losses[2 + i]) << "step " << 3 + i;
  }
  EXPECT_EQ(b2.val.loss, a.val.loss);
}

TEST(Trainer, OneOptimizersCheckpointDoesNotResumeUnderTheOther) {
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"adamw", "muon"}, {"muon", "adamw"}}) {
    TrainConfig c = muon_config(from + "_then_" + to, 2);
    c.optimizer = from;
    c.stop_at = 1;
    run_training(c, StartMode::kFresh, quiet);
    c.stop_at = 0;
    c.optimizer = to;
    const std::string e = test::error_of([&] { run_training(c, StartMode::kResume, quiet); });
    EXPECT_NE(e.find("another configuration: train.optimizer (checkpoint \"" + from + "\", now \"" + to + "\")"),
              std::string::npos)
        << e;
  }
}

TEST(Trainer, DumpsLinearOperandsThatGradErrorLoads) {
  TrainConfig c = small_config("dump", "quartet2");
  c.steps = 4;
  c.dump_every = 2;
  run_training(c, StartMode::kFresh, quiet);
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

TEST(Trainer, DumpLayersAllDumpsEveryBlockLinearOfEveryLayer) {
  TrainConfig c = small_config("dump_all", "quartet2");
  c.steps = 1;
  c.dump_every = 1;
  c.dump_layers = "all";
  run_training(c, StartMode::kFresh, quiet);
  const model::ModelConfig mc = model::preset(c.preset, 300, c.seq_len);
  ASSERT_GT(mc.n_layers, 2) << "middle layers tell 'all' from 'ends'";
  for (int64_t l = 0; l < mc.n_layers; ++l)
    for (const std::string& lin : model::block_linear_names(mc)) {
      const fs::path d = fs::path(c.out_dir) / "tensors" / "step1" / ("layers." + std::to_string(l) + "." + lin);
      for (const char* f : {"x.npy", "w.npy", "dy.npy"}) EXPECT_TRUE(fs::exists(d / f)) << d / f;
    }
}

// log.dump_rows keeps the first tokens of X and dY, exactly as a whole dump of the same step
// has them, and W whole.
TEST(Trainer, DumpRowsKeepsTheFirstTokensOfXAndDy) {
  TrainConfig whole = small_config("dump_whole", "quartet2");
  whole.steps = 1;
  whole.dump_every = 1;
  TrainConfig cut = whole;
  cut.out_dir = small_config("dump_cut", "quartet2").out_dir;
  cut.dump_rows = 48;
  ASSERT_GT(whole.batch_size * whole.seq_len, cut.dump_rows);
  run_training(whole, StartMode::kFresh, quiet);
  run_training(cut, StartMode::kFresh, quiet);
  const fs::path lin = fs::path("tensors") / "step1" / "layers.0.attention.wqkv";
  const eval::LayerOperands a = eval::load_operands((fs::path(whole.out_dir) / lin).string());
  const eval::LayerOperands b = eval::load_operands((fs::path(cut.out_dir) / lin).string());
  EXPECT_EQ(b.x.rows, cut.dump_rows);
  EXPECT_EQ(b.dy.rows, cut.dump_rows);
  EXPECT_TRUE(std::equal(b.x.data.begin(), b.x.data.end(), a.x.data.begin()));
  EXPECT_TRUE(std::equal(b.dy.data.begin(), b.dy.data.end(), a.dy.data.begin()));
  EXPECT_EQ(b.w.rows, a.w.rows);
  EXPECT_EQ(b.w.data, a.w.data);
}

TEST(Trainer, NaNStopsNamingTheStepAndALastCheckpointThatLoadsAndResumes) {
  TrainConfig c = small_config("nan", "bf16");
  c.ckpt_every = 1;
  c.steps = 8;
  c.stop_at = 3;
  run_training(c, StartMode::kFresh, quiet);
  // Resumed with a learning rate that blows the weights up in step 4's update (to finite but huge
  // values): step 5's loss is not finite. The checkpoint due after step 4 holds those weights, so
  // it must not be written; step 3's is the last good one.
  TrainConfig blow = c;
  blow.stop_at = 0;
  blow.lr = 1e30;
  blow.clip = 0;
  blow.warmup_frac = 0;
  try {
    run_training(blow, StartMode::kResume, quiet);
    FAIL() << "training should have stopped";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("training stopped at step 5"), std::string::npos) << m;
    EXPECT_NE(m.find("not finite"), std::string::npos) << m;
    EXPECT_NE(m.find("the last good checkpoint is '" + checkpoint_path(c) + "' (step 3)"), std::string::npos) << m;
  }
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(c)).step, 3);
  // It evaluates to a finite loss and resumes.
  LoadedModel m = load_for_inference(checkpoint_path(c));
  const data::DatasetMeta d = dataset_for(m, "");
  const EvalResult r = evaluate(*m.model, d, data::Tokenizer::load(d.tokenizer).byte_lengths(), 2, 2, c.seq_len);
  EXPECT_TRUE(std::isfinite(r.loss));
  TrainConfig again = c;
  again.stop_at = 0;
  EXPECT_EQ(run_training(again, StartMode::kResume, quiet).losses.size(), 5u);
}

TEST(Trainer, AFailingEvaluationKeepsTheStepsProgress) {
  // A copy of the dataset whose validation tokens are damaged past its header: the run starts, and
  // the first evaluation (step 3) fails.
  const fs::path good = dataset_dir();  // first: making it clears test_root()
  const fs::path data = test_root() / "badval";
  fs::create_directories(data);
  for (const auto& e : fs::directory_iterator(good)) fs::copy(e.path(), data / e.path().filename());
  {
    std::fstream f(data / "val.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-2, std::ios::end);
    f.write("\xff\xff", 2);  // token 65535 in a vocabulary of 300
  }
  TrainConfig c = small_config("evalfail", "bf16");
  c.data_dir = data.string();
  c.eval_every = 3;
  c.ckpt_every = 1000;
  const std::string m = test::error_of([&] { run_training(c, StartMode::kFresh, quiet); });
  EXPECT_NE(m.find("training stopped at step 3: the evaluation failed: "), std::string::npos) << m;
  EXPECT_NE(m.find("val.bin"), std::string::npos) << m;
  EXPECT_NE(m.find("the last good checkpoint is '" + checkpoint_path(c) + "' (step 3)"), std::string::npos) << m;
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(c)).step, 3);
}

TEST(Trainer, RunFolderIsNeverReplacedByAccidentNorSharedAndLeftClean) {
  TrainConfig c = small_config("folder", "bf16");
  c.steps = 4;
  run_training(c, StartMode::kFresh, quiet);
  const std::string again = test::error_of([&] { run_training(c, StartMode::kFresh, quiet); });
  EXPECT_NE(again.find("already holds a run"), std::string::npos) << again;
  EXPECT_NE(again.find("--resume"), std::string::npos) << again;
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(c)).step, 4) << "the refused run must not touch the checkpoint";

  // A second trainer on the folder while one holds it.
  {
    RunDir held(c.out_dir, quiet);
    const std::string busy = test::error_of([&] { run_training(c, StartMode::kOverwrite, quiet); });
    EXPECT_NE(busy.find("in use by another quartet2 process (pid " + std::to_string(::getpid()) + ")"),
              std::string::npos)
        << busy;
  }
  // Leftovers of a killed write go; --overwrite starts over.
  const fs::path stale = fs::path(c.out_dir) / "checkpoint.bin.tmp.99999";
  std::ofstream(stale) << "partial";
  std::vector<std::string> lines;
  c.steps = 2;
  run_training(c, StartMode::kOverwrite, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_NE(lines.front().find("checkpoint.bin.tmp.99999"), std::string::npos) << lines.front();
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(c)).step, 2);

  // Resuming a finished run, or one with no checkpoint, says what to do.
  const std::string done = test::error_of([&] { run_training(c, StartMode::kResume, quiet); });
  EXPECT_NE(done.find("nothing is left to train"), std::string::npos) << done;
  TrainConfig empty = small_config("folder-empty", "bf16");
  EXPECT_NE(test::error_of([&] { run_training(empty, StartMode::kResume, quiet); }).find("holds no checkpoint.bin"),
            std::string::npos);
}

TEST(Trainer, ResumedRunLogsEveryStepOnce) {
  TrainConfig c = small_config("metrics", "bf16");
  c.steps = 6;
  c.stop_at = 4;
  c.ckpt_every = 2;
  c.eval_every = 2;
  run_training(c, StartMode::kFresh, quiet);
  // As if killed after step 5 had been logged but before its checkpoint, mid-way through a line.
  {
    std::ofstream f(fs::path(c.out_dir) / "metrics.jsonl", std::ios::app);
    f << "{\"step\": 5, \"loss\": 1.0}\n{\"step\": 5, \"val_lo";
  }
  c.stop_at = 0;
  run_training(c, StartMode::kResume, quiet);
  std::ifstream f(fs::path(c.out_dir) / "metrics.jsonl");
  std::map<int64_t, int> train_lines, eval_lines;
  for (std::string line; std::getline(f, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ++(j.contains("val_loss") ? eval_lines : train_lines)[j.at("step").get<int64_t>()];
  }
  EXPECT_EQ(train_lines, (std::map<int64_t, int>{{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}}));
  EXPECT_EQ(eval_lines, (std::map<int64_t, int>{{2, 1}, {4, 1}, {6, 1}}));
}

TEST(Trainer, CheckpointsRecordTheirTokenizer) {
  TrainConfig c = small_config("identity", "bf16");
  c.steps = 2;
  run_training(c, StartMode::kFresh, quiet);
  const CheckpointInfo info = read_checkpoint_info(checkpoint_path(c));
  EXPECT_EQ(info.dataset.at("vocab_size"), 300);
  // A dataset of the same vocabulary size with a tokenizer trained on other text is refused.
  {
    std::ofstream text(test_root() / "other.txt");
    for (int doc = 0; doc < 300; ++doc) text << "zebra yak xylophone walrus vole " << doc * 7919 << " umbrella.\n\n";
  }
  data::PrepareOptions o;
  o.corpus = (test_root() / "other.txt").string();
  o.vocab = 300;
  o.out = (test_root() / "other").string();
  o.val_fraction = 0.05;
  data::prepare(o, [](const std::string&) {});
  LoadedModel m = load_for_inference(checkpoint_path(c));
  const std::string e = test::error_of([&] { dataset_for(m, o.out); });
  EXPECT_NE(e.find("another tokenizer"), std::string::npos) << e;
  EXPECT_NO_THROW(dataset_for(m, ""));
  TrainConfig moved = c;
  moved.data_dir = o.out;
  moved.steps = 3;
  EXPECT_NE(test::error_of([&] { run_training(moved, StartMode::kResume, quiet); }).find("another tokenizer"),
            std::string::npos);
}

TEST(Trainer, ABatchThatCannotFitIsRefusedNamingItsOptions) {
  TrainConfig c = small_config("huge", "bf16");
  c.batch_size = int64_t{1} << 30;
  const std::string e = test::error_of([&] { run_training(c, StartMode::kFresh, quiet); });
  EXPECT_NE(e.find("train.batch_size 1073741824 x model.seq_len 32 with vocabulary 300"), std::string::npos) << e;
  EXPECT_NE(e.find("is available"), std::string::npos) << e;
  EXPECT_NE(e.find("train.batch_size = "), std::string::npos) << e << "\nsuggests a micro-batch that fits";
  c.steps = 1;
  c.batch_size = int64_t{1} << 52;  // passes the config's token bound; batch x seq x vocab overflows
  EXPECT_NE(test::error_of([&] { run_training(c, StartMode::kFresh, quiet); }).find("overflows"), std::string::npos);
  EXPECT_FALSE(fs::exists(c.out_dir)) << "nothing is created for a run that cannot start";
}

TEST(Trainer, ResumeRejectsAnotherConfigAndMissingData) {
  TrainConfig c = small_config("mismatch", "bf16");
  c.steps = 2;
  run_training(c, StartMode::kFresh, quiet);
  TrainConfig other = c;
  other.scheme = "quartet2";
  try {
    run_training(other, StartMode::kResume, quiet);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another configuration"), std::string::npos);
  }
  TrainConfig nodata = c;
  nodata.data_dir = "/nonexistent/q2data";
  EXPECT_THROW(run_training(nodata, StartMode::kFresh, quiet), Error);
}

// A run with precision overrides logs its assignment; its checkpoint evaluates as the run did
// (the loaded model keeps the same linears in BF16), resumes only under the same overrides, and
// is refused by the NVFP4 export, which cannot yet write BF16 linears beside NVFP4 ones.
TEST(Trainer, PrecisionOverridesAreLoggedKeptByTheCheckpointAndFixedForTheRun) {
  TrainConfig c = small_config("overrides", "quartet2");
  c.model.n_layers = 2;
  c.precision = {.bf16_first_layers = 1, .bf16_linears = {"feed_forward.w12"}};
  c.steps = 2;
  c.eval_every = 2;
  std::vector<std::string> lines;
  const TrainSummary s = run_training(c, StartMode::kFresh, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_NE(std::find(lines.begin(), lines.end(),
                      "block linears:\nlayer 0: bf16\nlayer 1: attention.wqkv quartet2, attention.wo quartet2, "
                      "feed_forward.w12 bf16, feed_forward.w3 quartet2"),
            lines.end());
  LoadedModel m = load_for_inference(checkpoint_path(c));
  const data::DatasetMeta d = dataset_for(m, "");
  const EvalResult r = evaluate(*m.model, d, data::Tokenizer::load(d.tokenizer).byte_lengths(), c.eval_batches,
                                c.batch_size, c.seq_len);
  EXPECT_EQ(r.loss, s.val.loss);
  const std::string nvfp4 = test::error_of(
      [&] { export_hf_folder(m, d, {(test_root() / "overrides_nvfp4").string(), WeightFormat::kNvfp4}); });
  EXPECT_NE(nvfp4.find("export --format nvfp4: the model keeps some block linears in BF16"), std::string::npos) << nvfp4;
  TrainConfig other = c;
  other.steps = 3;
  other.precision.bf16_first_layers = 0;
  EXPECT_NE(test::error_of([&] { run_training(other, StartMode::kResume, quiet); })
                .find("another configuration: method.bf16_first_layers (checkpoint 1, now 0)"),
            std::string::npos);
}

// A method key that changes the backward only (set(c, true) turns it on, set(c, false) off): the
// first step's loss is the same (the same forward), the second differs, and a run resumes only
// under the value it started with, refused naming `refusal`.
void expect_backward_key_fixed_for_the_run(const std::string& out, const std::function<void(TrainConfig&, bool)>& set,
                                           const std::string& refusal) {
  TrainConfig plain = small_config(out + "_off", "quartet2"), c = small_config(out + "_on", "quartet2");
  plain.steps = c.steps = 2;
  plain.eval_every = c.eval_every = 2;
  set(c, true);
  const TrainSummary a = run_training(plain, StartMode::kFresh, quiet), b = run_training(c, StartMode::kFresh, quiet);
  EXPECT_EQ(a.losses[0], b.losses[0]);  // the same forward
  EXPECT_NE(a.losses[1], b.losses[1]);  // after another backward
  TrainConfig other = c;
  other.steps = 3;
  set(other, false);
  EXPECT_NE(test::error_of([&] { run_training(other, StartMode::kResume, quiet); })
                .find("another configuration: " + refusal),
            std::string::npos);
}

// MS-EDEN's fallback reaches the backward (at an outlier share of 0.05 most chunks exceed it).
TEST(Trainer, EdenFallbackChangesTheBackwardAndIsFixedForTheRun) {
  expect_backward_key_fixed_for_the_run(
      "fallback", [](TrainConfig& c, bool on) { c.eden_fallback = on ? 0.05 : 0; },
      "method.eden_fallback (checkpoint 0.05, now 0.0)");
}

TEST(Trainer, HadamardRoundsChangeTheBackwardAndAreFixedForTheRun) {
  expect_backward_key_fixed_for_the_run(
      "rounds", [](TrainConfig& c, bool on) { c.hadamard_rounds = on ? 2 : 1; },
      "method.hadamard_rounds (checkpoint 2, now 1)");
}

// The outlier split at its lowest share, where a small model's gradients have dominated chunks.
TEST(Trainer, OutlierSplitChangesTheBackwardAndIsFixedForTheRun) {
  expect_backward_key_fixed_for_the_run(
      "split", [](TrainConfig& c, bool on) { c.outlier_split = on ? 0.5 : 0; },
      "method.outlier_split (checkpoint 0.5, now 0.0)");
}

// The per-step records of out.dir/metrics.jsonl (not the evaluations).
std::vector<nlohmann::json> step_records(const TrainConfig& c) {
  std::ifstream f(fs::path(c.out_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(f, line);)
    if (const nlohmann::json j = nlohmann::json::parse(line); j.contains("grad_norm")) records.push_back(j);
  return records;
}

// A checkpoint's tensors (weights, then the optimizer's state), without its header and checksum.
std::string checkpoint_tensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t header = 0;
  std::memcpy(&header, b.data() + 8, 8);
  return b.substr(16 + header, b.size() - 4 - 16 - header);
}

// log.param_grad_norms: each step's record names every parameter of the model once, the squares
// of its norms add up to the logged global norm, and logging them changes nothing in the run.
TEST(Trainer, ParamGradNormsNameEveryParameterAndAddUpToTheGradientNorm) {
  TrainConfig plain = small_config("norms_off", "quartet2");
  plain.steps = 3;
  TrainConfig logged = plain;
  logged.out_dir = (test_root() / "norms_on").string();
  logged.param_grad_norms = true;
  const TrainSummary a = run_training(plain, StartMode::kFresh, quiet), b = run_training(logged, StartMode::kFresh, quiet);
  EXPECT_EQ(a.losses, b.losses);
  const auto backend = model::make_cpu_backend();
  model::Transformer model(model_config(logged, data::load_dataset(logged.data_dir).vocab_size),
                           linear::scheme_by_name("quartet2"), *backend);
  const std::vector<nlohmann::json> off = step_records(plain), on = step_records(logged);
  ASSERT_EQ(on.size(), 3u);
  ASSERT_EQ(off.size(), 3u);
  for (size_t i = 0; i < on.size(); ++i) {
    EXPECT_FALSE(off[i].contains("param_grad_norms"));
    EXPECT_EQ(off[i].at("grad_norm"), on[i].at("grad_norm"));
    const nlohmann::json& norms = on[i].at("param_grad_norms");
    ASSERT_EQ(norms.size(), model.params().size());
    double squares = 0;
    for (const model::Param& p : model.params()) {
      ASSERT_TRUE(norms.contains(p.name)) << p.name;
      const double v = norms.at(p.name).get<double>();
      EXPECT_GT(v, 0) << p.name;
      squares += v * v;
    }
    EXPECT_NEAR(std::sqrt(squares), on[i].at("grad_norm").get<double>(), 1e-12 * std::sqrt(squares));
  }
}

// A model small enough for many short runs; bf16 (the guard does not depend on the scheme).
TrainConfig guarded_config(const std::string& out) {
  TrainConfig c = small_config(out, "bf16");
  c.model.n_layers = 2;
  c.model.d_model = 64;
  c.steps = 12;
  c.eval_every = 12;
  c.spike_guard = 1.02;
  c.spike_window = 4;
  return c;
}

// The guard skips exactly the updates whose gradient norm exceeds the factor times the median of
// the window before them (re-derived here from the logged norms), leaves the weights and the
// optimizer's state of those steps as they were, and a run resumed after every step (the window
// coming back from each checkpoint) is the uninterrupted run, bit for bit. A factor barely above
// 1 makes the ordinary ups and downs of the norm spikes, so both kinds of step occur.
TEST(Trainer, SpikeGuardSkipsExactlyTheSpikesLeavingTheirWeightsAndResumesBitIdentically) {
  const TrainConfig c = guarded_config("guard_full");
  std::vector<std::string> lines;
  const TrainSummary full = run_training(c, StartMode::kFresh, [&](const std::string& l) { lines.push_back(l); });
  const std::vector<nlohmann::json> records = step_records(c);
  ASSERT_EQ(records.size(), 12u);
  std::vector<double> window;
  std::vector<int64_t> spikes;
  for (const nlohmann::json& r : records) {
    const double norm = r.at("grad_norm").get<double>();
    double threshold = INFINITY;
    if (2 * window.size() >= 4) {
      std::vector<double> v = window;
      std::sort(v.begin(), v.end());
      threshold = c.spike_guard * (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
    }
    if (norm > threshold) spikes.push_back(r.at("step").get<int64_t>());
    EXPECT_EQ(r.at("skipped").get<bool>(), norm > threshold) << r.dump();
    window.push_back(norm);
    if (window.size() > 4) window.erase(window.begin());
  }
  EXPECT_EQ(full.skipped, spikes);
  ASSERT_FALSE(spikes.empty()) << "no step was skipped: the test needs a smaller train.spike_guard";
  ASSERT_LT(spikes.size(), 9u) << "every judged step was skipped: the test needs a larger train.spike_guard";
  for (const int64_t s : spikes) {
    const std::string start = "step " + std::to_string(s) + ": update skipped (train.spike_guard): gradient norm ";
    EXPECT_EQ(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(start, 0) == 0; }), 1)
        << "step " << s;
  }

  TrainConfig chain = guarded_config("guard_chain");
  std::string before;
  for (int64_t s = 1; s <= c.steps; ++s) {
    chain.stop_at = s;
    const TrainSummary part = run_training(chain, s == 1 ? StartMode::kFresh : StartMode::kResume, quiet);
    ASSERT_EQ(part.losses.size(), 1u);
    EXPECT_EQ(part.losses[0], full.losses[static_cast<size_t>(s - 1)]) << "step " << s;
    const std::string after = checkpoint_tensors(checkpoint_path(chain));
    const bool skipped = std::find(spikes.begin(), spikes.end(), s) != spikes.end();
    EXPECT_EQ(part.skipped, skipped ? std::vector<int64_t>{s} : std::vector<int64_t>{}) << "step " << s;
    if (s > 1) {
      EXPECT_EQ(after == before, skipped) << "step " << s << (skipped ? " changed" : " kept") << " the weights";
    }
    before = after;
  }
}

// A checkpoint without a window (written with the guard off, or before it existed) resumes
// under the guard, which starts judging once its window has filled again.
TEST(Trainer, CheckpointWithoutAGuardWindowResumesUnderTheGuard) {
  TrainConfig c = guarded_config("guard_later");
  c.spike_guard = 0;
  c.stop_at = 6;
  run_training(c, StartMode::kFresh, quiet);
  EXPECT_FALSE(read_checkpoint_info(checkpoint_path(c)).header.contains("spike_guard"));
  c.spike_guard = 1.02;
  c.stop_at = 0;
  const TrainSummary resumed = run_training(c, StartMode::kResume, quiet);
  EXPECT_EQ(resumed.losses.size(), 6u);
  for (const int64_t s : resumed.skipped) EXPECT_GE(s, 9) << "judged before 2 norms of the resumed run";
  EXPECT_EQ(read_checkpoint_info(checkpoint_path(c)).header.at("spike_guard").size(), 4u);
}

// A checkpoint records data.dir as given, relative to the folder training ran in; from another
// folder it is found there through out.dir, and when it is nowhere the error suggests --data.
TEST(Trainer, RelativeDataDirIsFoundFromTheCheckpointsRun) {
  const fs::path work = test_root() / "relative" / "work";
  const std::string data = "q2_rel_data_" + std::to_string(::getpid());  // not in the tests' own folder
  fs::create_directories(work / data);
  std::ofstream(work / data / "meta.json") << "{}";
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = "runs/./q2/";
  const std::string ckpt = (work / "runs/q2/checkpoint.bin").string();
  EXPECT_EQ(training_data_dir(c, ckpt), (work / data).string());
  c.data_dir = (work / data).string();  // an absolute path is used as it is
  EXPECT_EQ(training_data_dir(c, "elsewhere/checkpoint.bin"), c.data_dir);
  c.data_dir = data;
  c.out_dir = "other";  // the checkpoint was moved out of its run: not found
  const std::string e = test::error_of([&] { training_data_dir(c, ckpt); });
  EXPECT_NE(e.find("the checkpoint's dataset '" + data + "'"), std::string::npos) << e;
  EXPECT_NE(e.find("pass --data DIR"), std::string::npos) << e;
}

}  // namespace
}  // namespace q2::train
