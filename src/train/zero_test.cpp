// ZeRO-1 against the unsharded optimizer, with threads as ranks (model/in_process.h): the same
// losses, weights and optimizer state bit for bit at world sizes 1 to 4, and checkpoints that
// resume under any world size and dist.zero setting.
#include "train/zero.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/in_process_test_util.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/test_dataset.h"
#include "train/trainer.h"

namespace q2::train {
namespace {

void quiet(const std::string&) {}

// Two blocks of width 128, a few steps: AdamW under quartet2 (each rank's own stochastic
// backward), Muon under bf16 on nanochat's architecture (its matrix, embedding, head and lambda
// groups). Buckets of 48 KiB: several per step, and tensors larger than a bucket.
TrainConfig config(const std::string& out, const std::string& optimizer, int64_t zero) {
  TrainConfig c;
  c.data_dir = test::dataset_dir();
  c.out_dir = (test::test_root() / out).string();
  c.optimizer = optimizer;
  c.scheme = optimizer == "adamw" ? "quartet2" : "bf16";
  if (optimizer == "muon") c.preset = "nanochat-d20";
  c.model.n_layers = 2;
  c.model.d_model = 128;
  c.model.n_heads = 2;
  c.model.n_kv_heads = 2;
  c.model.d_ff = 256;
  c.seq_len = 32;
  c.batch_size = 2;
  c.steps = 4;
  c.lr = 3e-3;
  c.warmup_frac = 0;
  c.eval_every = 1000;  // the last step's only
  c.eval_batches = 1;
  c.ckpt_every = 1000;
  c.bucket_mb = 48.0 / 1024;
  c.zero = zero;
  return c;
}

// Trains with `world` threads as ranks; every rank must see the same losses. Returns rank 0's.
TrainSummary train(const TrainConfig& c, int world, StartMode mode = StartMode::kFresh) {
  model::InProcessGroup group(world, 60);
  std::vector<TrainSummary> summary(static_cast<size_t>(world));
  const auto errors = test::on_ranks(group, [&](int r) { summary[r] = run_training(c, mode, quiet, &group.rank(r)); });
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(summary[r].losses, summary[0].losses) << "rank " << r;
  }
  return summary[0];
}

// A checkpoint's weights and optimizer state: its bytes between the header and the checksum.
std::string tensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  const std::string b = s.str();
  uint64_t header = 0;
  if (b.size() < 20) return "";
  std::memcpy(&header, b.data() + 8, 8);
  return b.substr(16 + header, b.size() - 20 - header);
}

std::string out_of(const TrainConfig& c) { return checkpoint_path(c); }

// The gradient norms of a run's steps, as its metrics hold them.
std::vector<double> grad_norms(const TrainConfig& c) {
  std::ifstream f(RunDir::metrics_file(c.out_dir));
  std::vector<double> norms;
  for (std::string line; std::getline(f, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("grad_norm")) norms.push_back(j["grad_norm"].get<double>());
  }
  return norms;
}

TEST(Zero, ShardsBalanceByStateSizeOnEveryRank) {
  // The largest first, each to the least-loaded rank (the lowest on a tie).
  EXPECT_EQ(balance_owners({5, 9, 1, 4, 4, 3}, 2), (std::vector<int>{1, 0, 1, 1, 0, 1}));
  EXPECT_EQ(balance_owners({5, 9}, 3), (std::vector<int>{1, 0}));
  const TrainConfig c = config("unused", "muon", 1);
  const model::ModelConfig mc = model_config(c, 300);
  const std::vector<model::Param> params = model::Transformer::param_shapes(mc);
  EXPECT_FALSE(make_shard(config("unused", "muon", 0), params, mc, 0, 4).sharded());
  for (int world : {1, 2, 3, 4}) {
    std::vector<uint64_t> held(static_cast<size_t>(world), 0);
    uint64_t largest = 0, total = 0;
    for (int r = 0; r < world; ++r) {
      const Shard s = make_shard(c, params, mc, r, world);
      ASSERT_EQ(s.owner.size(), params.size());
      EXPECT_EQ(s.owner, make_shard(c, params, mc, 0, world).owner);  // every rank deals the same
      for (size_t i = 0; i < params.size(); ++i)
        if (s.holds(i)) held[static_cast<size_t>(r)] += state_floats(c, params[i], mc);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      largest = std::max(largest, state_floats(c, params[i], mc));
      total += state_floats(c, params[i], mc);
    }
    // Greedy dealing: no rank holds more than an even share plus the largest tensor.
    for (const uint64_t h : held) EXPECT_LE(h, total / world + largest) << "world " << world;
  }
}

// The check: with 1 to 4 ranks, ZeRO-1 gives the unsharded optimizer's losses, weights and
// optimizer state bit for bit (the checkpoints gather the shards, so their tensors compare whole).
TEST(Zero, ShardedTrainingIsBitIdenticalToUnshardedAtEveryWorldSize) {
  for (const char* optimizer : {"adamw", "muon"}) {
    for (int world : {1, 2, 3, 4}) {
      SCOPED_TRACE(std::string(optimizer) + ", world " + std::to_string(world));
      const std::string tag = std::string(optimizer) + std::to_string(world);
      const TrainConfig whole = config("whole_" + tag, optimizer, 0), sharded = config("zero_" + tag, optimizer, 1);
      const TrainSummary a = train(whole, world), b = train(sharded, world);
      ASSERT_EQ(a.losses.size(), 4u);
      EXPECT_EQ(b.losses, a.losses);
      EXPECT_EQ(b.val.loss, a.val.loss);
      EXPECT_EQ(grad_norms(sharded), grad_norms(whole));
      EXPECT_LT(a.losses.back(), a.losses.front());
      const std::string t = tensors(out_of(whole));
      ASSERT_FALSE(t.empty());
      EXPECT_TRUE(tensors(out_of(sharded)) == t) << "weights or optimizer state differ";
    }
  }
}

// A checkpoint of step 2 written under 2 ranks with ZeRO-1 continues under any world size and
// setting exactly as the unsharded optimizer continues it; and one written without ZeRO-1
// continues under ZeRO-1 as the straight run does.
TEST(Zero, CheckpointsResumeUnderAnyWorldSizeAndSetting) {
  for (const char* optimizer : {"adamw", "muon"}) {
    SCOPED_TRACE(optimizer);
    const std::string o = optimizer;
    const TrainConfig straight = config("straight_" + o, optimizer, 0);
    const TrainSummary full = train(straight, 2);

    for (const int64_t writer : {0, 1}) {
      TrainConfig half = config("half" + std::to_string(writer) + "_" + o, optimizer, writer);
      half.stop_at = 2;
      train(half, 2);
      half.stop_at = 0;
      half.zero = 1 - writer;
      const TrainSummary rest = train(half, 2, StartMode::kResume);
      ASSERT_EQ(rest.losses.size(), 2u);
      EXPECT_EQ(rest.losses[0], full.losses[2]) << "written with dist.zero = " << writer;
      EXPECT_EQ(rest.losses[1], full.losses[3]) << "written with dist.zero = " << writer;
      EXPECT_TRUE(tensors(out_of(half)) == tensors(out_of(straight))) << "written with dist.zero = " << writer;
    }

    // Under another world size (a new data split): sharded and unsharded continue alike.
    TrainConfig from = config("from_" + o, optimizer, 1);
    from.stop_at = 2;
    train(from, 2);
    for (int world : {1, 3, 4}) {
      std::string last;
      std::vector<double> losses;
      for (const int64_t zero : {0, 1}) {
        const TrainConfig c = config("to" + std::to_string(world) + std::to_string(zero) + "_" + o, optimizer, zero);
        std::filesystem::create_directories(c.out_dir);
        std::filesystem::copy_file(out_of(from), out_of(c));
        const TrainSummary s = train(c, world, StartMode::kResume);
        ASSERT_EQ(s.losses.size(), 2u);
        if (zero == 0) {
          losses = s.losses;
          last = tensors(out_of(c));
        } else {
          EXPECT_EQ(s.losses, losses) << "world " << world;
          EXPECT_TRUE(tensors(out_of(c)) == last) << "world " << world;
        }
      }
    }
  }
}

// Loading a checkpoint into the shards of 3 ranks and saving it again gives back its tensors.
TEST(Zero, ACheckpointSurvivesReshardingAndGathering) {
  const TrainConfig c = config("roundtrip", "muon", 1);
  TrainConfig one = c;
  one.steps = 1;
  train(one, 1);
  const std::string again = (test::test_root() / "roundtrip" / "again.bin").string();
  model::InProcessGroup group(3, 60);
  const auto errors = test::on_ranks(group, [&](int r) {
    const auto backend = model::make_cpu_backend(&group.rank(r));
    const CheckpointInfo info = read_checkpoint_info(out_of(one));
    model::Transformer m(info.model, linear::scheme_by_name(c.scheme), *backend);
    const auto opt = make_optimizer(c, *backend, m.params(), info.model, make_shard(c, m.params(), info.model, r, 3));
    // Each rank holds only its shard's state.
    for (const OptimizerState& s : opt->state()) EXPECT_EQ(s.tensor != nullptr, opt->shard().holds(s.param)) << s.name;
    load_checkpoint(out_of(one), m, opt.get(), &c);
    save_checkpoint(again, c, m, opt.get(), 1, info.header.at("loader"), info.dataset);
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_TRUE(tensors(again) == tensors(out_of(one)));
}

}  // namespace
}  // namespace q2::train
