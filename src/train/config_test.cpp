#include "train/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/error.h"
#include "common/error_test_util.h"
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
  const auto msg = test::error_of;
  EXPECT_NE(msg([] { load_config("", {"--train.lrate=1"}); }).find("unknown option 'train.lrate'"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.steps=ten"}); }).find("expects a number"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.steps=1.5"}); }).find("train.steps"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"train.steps"}); }).find("--section.key=value"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--train.schedule=linear"}); }).find("cosine"), std::string::npos);
  EXPECT_NE(msg([] { load_config("", {"--method.gemm=fp4"}); }).find("method.gemm"), std::string::npos);
  EXPECT_NE(msg([] { load_config("/nonexistent/q2.toml", {}); }).find("/nonexistent/q2.toml"), std::string::npos);
  const std::string bad = write_temp("q2_cfg_bad.toml", "[train\nlr = 1\n");
  EXPECT_NE(msg([&] { load_config(bad, {}); }).find("line 1"), std::string::npos);
}

using test::error_of;

TEST(TrainConfig, OutOfRangeValuesAreRejectedNamingKeyAndValue) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--train.beta1=2"}, "train.beta1 must be in [0, 1), got 2"},
      {{"--train.beta2=1"}, "train.beta2 must be in [0, 1), got 1"},
      {{"--train.eps=-1"}, "train.eps must be finite and > 0, got -1"},
      {{"--train.weight_decay=-50"}, "train.weight_decay must be finite and >= 0, got -50"},
      {{"--train.min_lr_ratio=-3"}, "train.min_lr_ratio must be in [0, 1], got -3"},
      {{"--train.min_lr_ratio=1.5"}, "train.min_lr_ratio must be in [0, 1], got 1.5"},
      {{"--train.seed=-1"}, "train.seed must be in [0, 18446744073709551615], got -1"},
      {{"--method.hadamard=-16"}, "method.hadamard must be 0 (the scheme's own) or 16, 32, 64 or 128, got -16"},
      {{"--method.hadamard=4294967312"}, "method.hadamard must be in [-2147483648, 2147483647], got 4294967312"},
      {{"--method.eden_fallback=1"}, "method.eden_fallback must be 0 (off) or in (0, 1), got 1"},
      {{"--method.eden_fallback=nan"}, "method.eden_fallback must be 0 (off) or in (0, 1), got nan"},
      {{"--method.hadamard_rounds=3"}, "method.hadamard_rounds must be 1 or 2, got 3"},
      {{"--method.outlier_split=0.3"}, "method.outlier_split must be 0 (off) or in [0.5, 1), got 0.3"},
      {{"--method.outlier_split=1"}, "method.outlier_split must be 0 (off) or in [0.5, 1), got 1"},
      {{"--log.dump_rows=-1"}, "log.dump_rows must be >= 0 (0: every token), got -1"},
      {{"--train.lr=nan"}, "train.lr must be finite and > 0, got nan"},
      {{"--train.lr=inf"}, "train.lr must be finite and > 0, got inf"},
      {{"--train.clip=-1"}, "train.clip must be finite and >= 0 (0: no clipping), got -1"},
      {{"--train.clip=inf"}, "train.clip must be finite and >= 0 (0: no clipping), got inf"},
      {{"--train.warmup_frac=nan"}, "train.warmup_frac must be in [0, 1), got nan"},
      {{"--train.decay_frac=nan"}, "train.decay_frac must be in (0, 1], got nan"},
      {{"--train.schedule=wsd", "--train.warmup_frac=0.5", "--train.decay_frac=0.6"},
       "train.warmup_frac + train.decay_frac must be at most 1 with train.schedule 'wsd', got 0.5 + 0.6"},
      {{"--train.optimizer=sgd"}, "train.optimizer must be 'adamw' or 'muon', got 'sgd'"},
      {{"--log.dump_layers=middle"}, "log.dump_layers must be 'ends' (first and last layer) or 'all', got 'middle'"},
      {{"--train.matrix_lr=-1"}, "train.matrix_lr must be finite and >= 0, got -1"},
      {{"--train.embedding_lr=inf"}, "train.embedding_lr must be finite and >= 0, got inf"},
      {{"--train.head_lr=nan"}, "train.head_lr must be finite and >= 0, got nan"},
      {{"--train.scalar_lr=-0.5"}, "train.scalar_lr must be finite and >= 0, got -0.5"},
      {{"--train.muon_momentum=1"}, "train.muon_momentum must be in [0, 1), got 1"},
      {{"--train.muon_momentum_start=-0.1"}, "train.muon_momentum_start must be in [0, 1), got -0.1"},
      {{"--train.muon_momentum_warmup=-1"},
       "train.muon_momentum_warmup must be >= 0 (0: muon_momentum from the start), got -1"},
      {{"--train.muon_beta2=nan"}, "train.muon_beta2 must be in [0, 1), got nan"},
      {{"--train.muon_weight_decay=-1"}, "train.muon_weight_decay must be finite and >= 0, got -1"},
      {{"--train.muon_ns=newton"}, "train.muon_ns must be 'quintic' or 'polar_express', got 'newton'"},
      {{"--model.seq_len=0"}, "model.seq_len must be >= 1, got 0"},
      {{"--train.steps=1000", "--model.seq_len=4611686018427387904"},
       "the run's tokens, train.steps * train.batch_size * train.grad_accum * model.seq_len * dist.world_size, must be "
       "below 2^63, got 1000 * 8 * 1 * 4611686018427387904 * 1"},
      {{"--train.batch_size=0"}, "train.batch_size must be >= 1, got 0"},
      {{"--train.stop_at=2000"}, "train.stop_at must be in [0, train.steps = 1000], got 2000"},
      {{"--log.eval_batches=0"}, "log.eval_batches must be >= 1, got 0"},
      {{"--log.ckpt_every=-1"}, "log.ckpt_every must be >= 1, got -1"},
      {{"--dist.rank=-2"}, "dist.rank must be >= 0 (-1: from the environment), got -2"},
      {{"--dist.local_rank=-2"}, "dist.local_rank must be >= 0 (-1: the rank), got -2"},
      {{"--dist.timeout_s=inf"}, "dist.timeout_s must be in (0, 1e9], got inf"},
      {{"--dist.bucket_mb=nan"}, "dist.bucket_mb must be in [0, 1e9] (0: one all-reduce after backward), got nan"},
      {{"--dist.zero=2"}, "dist.zero must be 0 or 1 (1: ZeRO-1, optimizer state sharded over the ranks), got 2"},
  };
  for (const auto& [overrides, message] : cases)
    EXPECT_EQ(error_of([&] { load_config("", overrides); }), "config: " + message) << overrides.back();
}

TEST(TrainConfig, TomlValuesMeetTheSameRules) {
  const auto error_in = [](const std::string& toml) {
    return error_of([&] { load_config(write_temp("q2_cfg_range.toml", toml), {}); });
  };
  EXPECT_EQ(error_in("[train]\nseed = -1\n"), "config: train.seed must be in [0, 18446744073709551615], got -1");
  EXPECT_EQ(error_in("[train]\nlr = nan\n"), "config: train.lr must be finite and > 0, got nan");
  EXPECT_EQ(error_in("[train]\nbeta1 = 2\n"), "config: train.beta1 must be in [0, 1), got 2");
  EXPECT_EQ(error_in("[method]\nhadamard = -16\n"),
            "config: method.hadamard must be 0 (the scheme's own) or 16, 32, 64 or 128, got -16");
}

TEST(TrainConfig, RangeEdgesAndWholeFloatsAreAccepted) {
  const TrainConfig c = load_config("", {"--train.beta1=0", "--train.min_lr_ratio=1", "--train.clip=0", "--method.hadamard=16",
                                         "--train.seed=9223372036854775807", "--train.steps=1e6", "--train.schedule=wsd",
                                         "--train.warmup_frac=0.3", "--train.decay_frac=0.7", "--dist.bucket_mb=0"});
  EXPECT_EQ(c.seed, 9223372036854775807u);
  EXPECT_EQ(c.steps, 1000000);
  EXPECT_EQ(c.hadamard, 16);
  // Too large for an int64: an error, not an undefined cast.
  EXPECT_NE(error_of([] { load_config("", {"--train.steps=1e30"}); }).find("option 'train.steps' expects a number"),
            std::string::npos);
}

TEST(TrainConfig, OverrideSplitsIntoKeyAndTypedValue) {
  EXPECT_EQ(parse_override("--method.device=cuda"), std::make_pair(std::string("method.device"), nlohmann::json("cuda")));
  EXPECT_EQ(parse_override("dist.timeout_s=60").second, nlohmann::json(60));
  EXPECT_EQ(parse_override("--train.lr=1e-4").second, nlohmann::json(1e-4));
  EXPECT_NE(error_of([] { parse_override("--train.lr"); }).find("--section.key=value"), std::string::npos);
}

TEST(TrainConfig, ModelKeysOverrideThePresetAndRoundTrip) {
  const std::string f = write_temp("q2_cfg_model.toml",
                                   "[model]\npreset = \"nanochat-d20\"\ndepth = 4\nqk_norm = false\nn_kv_heads = 1\n");
  const TrainConfig c = load_config(f, {"--model.tie_embeddings=true", "--model.logit_softcap=30"});
  EXPECT_EQ(c.seq_len, 2048);  // the nanochat preset's own
  EXPECT_EQ(c.model.depth, 4);
  EXPECT_EQ(c.model.qk_norm, false);
  EXPECT_EQ(c.model.tie_embeddings, true);
  EXPECT_FALSE(c.model.mlp.has_value());
  const model::ModelConfig m = model_config(c, 65536);
  EXPECT_EQ(m.n_layers, 4);
  EXPECT_EQ(m.d_model, 256);
  EXPECT_EQ(m.n_heads, 2);
  EXPECT_EQ(m.kv_heads(), 1);
  EXPECT_EQ(m.d_ff, 1024);
  EXPECT_EQ(m.vocab, 65536);
  EXPECT_EQ(m.seq_len, 2048);
  EXPECT_FALSE(m.qk_norm);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.logit_softcap, 30);
  EXPECT_EQ(m.mlp, "relu2");  // the rest is the preset's
  const nlohmann::json j = to_json(c);
  EXPECT_FALSE(j["model"].contains("mlp"));  // unset keys are left out
  EXPECT_EQ(j["model"]["depth"], 4);
  EXPECT_EQ(j["model"]["qk_norm"], false);
  const TrainConfig back = from_json(j);
  EXPECT_EQ(to_json(back), j);
  EXPECT_EQ(model::to_json(model_config(back, 65536)), model::to_json(m));
}

TEST(TrainConfig, SequenceLengthIsThePresetsUnlessGiven) {
  EXPECT_EQ(load_config("", {}).seq_len, 256);
  EXPECT_EQ(load_config("", {"--model.preset=nanochat-d32"}).seq_len, 2048);
  EXPECT_EQ(load_config("", {"--model.preset=nanochat-d32", "--model.seq_len=512"}).seq_len, 512);
  EXPECT_EQ(load_config(write_temp("q2_cfg_seq.toml", "[model]\npreset = \"nanochat-d20\"\nseq_len = 64\n"), {}).seq_len,
            64);
}

TEST(TrainConfig, ModelKeysAreCheckedOnLoadNamingKeyAndValue) {
  EXPECT_EQ(error_of([] { load_config("", {"--model.qk_norm=yes"}); }),
            "override '--model.qk_norm=yes': option 'model.qk_norm' expects a boolean, got \"yes\"");
  EXPECT_EQ(error_of([] { load_config("", {"--model.n_heads=3"}); }),
            "model config (preset 'tiny'): model.n_heads must be >= 1 and divide model.d_model = 256, got 3");
  EXPECT_EQ(error_of([] { load_config(write_temp("q2_cfg_kv.toml", "[model]\nn_kv_heads = 3\n"), {}); }),
            "model config (preset 'tiny'): model.n_kv_heads must be >= 1 (0: model.n_heads) and divide model.n_heads = "
            "4, got 3");
  EXPECT_EQ(error_of([] { load_config("", {"--model.mlp=gelu"}); }),
            "model config (preset 'tiny'): model.mlp must be 'swiglu' or 'relu2', got 'gelu'");
  EXPECT_NE(error_of([] { load_config("", {"--model.depth=1.5"}); }).find("option 'model.depth' expects a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--model.preset=7b"}); }).find("unknown model preset '7b'"), std::string::npos);
  EXPECT_NE(error_of([] { load_config(write_temp("q2_cfg_b.toml", "[model]\nqk_norm = 1\n"), {}); })
                .find("option 'model.qk_norm' expects a boolean, got 1"),
            std::string::npos);
}

// Configs stored before the model keys existed hold only preset and seq_len.
TEST(TrainConfig, ConfigWithoutModelKeysLoads) {
  nlohmann::json j = to_json(TrainConfig{});
  j["model"] = {{"preset", "30m"}, {"seq_len", 512}};
  const TrainConfig c = from_json(j);
  EXPECT_EQ(c.preset, "30m");
  EXPECT_FALSE(c.model.depth || c.model.n_heads || c.model.qk_norm || c.model.mlp);
  j["model"]["qk_norm"] = 1;
  EXPECT_EQ(error_of([&] { from_json(j); }), "config: 'model.qk_norm' must be true or false, got 1");
}

TEST(DistConfig, ValidationErrorsNameTheKey) {
  EXPECT_NE(error_of([] { load_config("", {"--dist.world_size=2", "--dist.rank=1"}); }).find("dist.rendezvous"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--dist.world_size=2", "--dist.rank=2", "--dist.rendezvous=/tmp/r"}); })
                .find("dist.rank must be in [0, 2)"),
            std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--dist.world_size=-1"}); }).find("dist.world_size"), std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--dist.rank=1"}); }).find("needs dist.world_size"), std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--dist.timeout_s=0"}); }).find("dist.timeout_s"), std::string::npos);
  EXPECT_NE(error_of([] { load_config("", {"--dist.bucket_mb=-1"}); }).find("dist.bucket_mb"), std::string::npos);
}

TEST(DistConfig, ResolvedFromFlagsThenOpenMpiThenSingleProcess) {
  auto env_of = [](std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> const char* {
      const auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  const std::map<std::string, std::string> mpi = {
      {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}};

  TrainConfig single = load_config("", {});
  resolve_dist(single, env_of({}));
  EXPECT_EQ(single.world_size, 1);
  EXPECT_EQ(single.rank, 0);
  EXPECT_EQ(single.local_rank, 0);

  TrainConfig flags = load_config("", {"--dist.world_size=2", "--dist.rank=1", "--dist.rendezvous=/tmp/r"});
  resolve_dist(flags, env_of(mpi));  // explicit flags win over the environment
  EXPECT_EQ(flags.world_size, 2);
  EXPECT_EQ(flags.rank, 1);
  EXPECT_EQ(flags.local_rank, 1);

  TrainConfig under_mpi = load_config("", {"--out.dir=/tmp/run"});
  resolve_dist(under_mpi, env_of(mpi));
  EXPECT_EQ(under_mpi.world_size, 4);
  EXPECT_EQ(under_mpi.rank, 3);
  EXPECT_EQ(under_mpi.local_rank, 1);
  EXPECT_EQ(under_mpi.rendezvous, "/tmp/run/rendezvous");

  TrainConfig broken = load_config("", {});
  EXPECT_NE(error_of([&] { resolve_dist(broken, env_of({{"OMPI_COMM_WORLD_SIZE", "two"}})); }).find("OMPI_COMM_WORLD_SIZE"),
            std::string::npos);
  TrainConfig no_rank = load_config("", {});
  EXPECT_NE(error_of([&] { resolve_dist(no_rank, env_of({{"OMPI_COMM_WORLD_SIZE", "2"}})); }).find("OMPI_COMM_WORLD_RANK"),
            std::string::npos);
}

TEST(DistConfig, CheckpointConfigWithoutDistSectionLoads) {
  nlohmann::json j = to_json(TrainConfig{});
  j.erase("dist");
  EXPECT_EQ(from_json(j).world_size, 0);
  j = to_json(TrainConfig{});
  j["dist"].erase("bucket_mb");  // written before buckets existed
  EXPECT_EQ(from_json(j).bucket_mb, 25);
  j["dist"].erase("zero");  // written before ZeRO-1
  EXPECT_EQ(from_json(j).zero, 0);
  EXPECT_EQ(load_config("", {"--dist.zero=1"}).zero, 1);
}

TEST(TrainConfig, CheckpointConfigWithoutDumpLayersDumpsTheEnds) {
  nlohmann::json j = to_json(load_config("", {"--log.dump_layers=all"}));
  EXPECT_EQ(from_json(j).dump_layers, "all");
  j["log"].erase("dump_layers");  // written before per-layer dumps
  EXPECT_EQ(from_json(j).dump_layers, "ends");
}

TEST(TrainConfig, CheckpointConfigWithoutOptimizerKeysIsAdamW) {
  TrainConfig muon = load_config("", {"--train.optimizer=muon", "--train.muon_ns=polar_express", "--train.matrix_lr=0.05"});
  const TrainConfig back = from_json(to_json(muon));
  EXPECT_EQ(back.optimizer, "muon");
  EXPECT_EQ(back.muon_ns, "polar_express");
  EXPECT_EQ(back.matrix_lr, 0.05);
  nlohmann::json j = to_json(TrainConfig{});
  for (const char* k : {"optimizer", "matrix_lr", "muon_ns", "muon_momentum_warmup"}) j["train"].erase(k);
  const TrainConfig old = from_json(j);  // written before Muon
  EXPECT_EQ(old.optimizer, "adamw");
  EXPECT_EQ(old.muon_momentum_warmup, 300);
  j["train"].erase("lr");  // an original key stays required
  EXPECT_NE(error_of([&] { from_json(j); }).find("lr"), std::string::npos);
}

// The precision overrides from a TOML file (an array of linear names) or the command line
// (names separated by commas); they round-trip through JSON.
TEST(TrainConfig, PrecisionOverrideKeys) {
  const std::string f = write_temp("q2_cfg_controls.toml",
                                   "[method]\nbf16_first_layers = 1\nbf16_last_layers = 2\n"
                                   "bf16_linears = [\"attention.wo\", \"feed_forward.w3\"]\n");
  const TrainConfig c = load_config(f, {});
  EXPECT_EQ(c.precision, (model::PrecisionOverrides{1, 2, {"attention.wo", "feed_forward.w3"}}));
  EXPECT_EQ(from_json(to_json(c)).precision, c.precision);
  EXPECT_EQ(load_config(f, {"--method.bf16_linears=feed_forward.w12, attention.wqkv"}).precision.bf16_linears,
            (std::vector<std::string>{"feed_forward.w12", "attention.wqkv"}));
  EXPECT_TRUE(load_config(f, {"--method.bf16_linears="}).precision.bf16_linears.empty());
  EXPECT_TRUE(load_config(write_temp("q2_cfg_none.toml", "[method]\nbf16_linears = []\n"), {}).precision.bf16_linears.empty());
  // Off by default.
  EXPECT_EQ(load_config("", {}).precision, model::PrecisionOverrides{});
}

TEST(TrainConfig, BadPrecisionOverridesAreNamed) {
  // The tiny preset has 4 layers; a model key changes what the overrides are checked against.
  EXPECT_EQ(error_of([] { load_config("", {"--method.bf16_first_layers=5"}); }),
            "config: method.bf16_first_layers must be in [0, model.n_layers = 4], got 5");
  EXPECT_EQ(error_of([] { load_config("", {"--model.n_layers=2", "--method.bf16_last_layers=3"}); }),
            "config: method.bf16_last_layers must be in [0, model.n_layers = 2], got 3");
  EXPECT_EQ(error_of([] { load_config("", {"--method.bf16_linears=attn_out,feed_forward.w3"}); }),
            "config: method.bf16_linears names 'attn_out', which the model's blocks do not have; they have "
            "attention.wqkv, attention.wo, feed_forward.w12 and feed_forward.w3");
  EXPECT_NE(error_of([] { load_config("", {"--model.mlp=relu2", "--method.bf16_linears=feed_forward.w12"}); })
                .find("they have attention.wqkv, attention.wo, feed_forward.w1 and feed_forward.w3"),
            std::string::npos);
  EXPECT_EQ(error_of([] { load_config("", {"--method.bf16_linears=3"}); }),
            "override '--method.bf16_linears=3': option 'method.bf16_linears' expects a list of names (comma-separated "
            "on the command line), got 3");
  const std::string numbers = write_temp("q2_cfg_numbers.toml", "[method]\nbf16_linears = [1, 2]\n");
  EXPECT_EQ(error_of([&] { load_config(numbers, {}); }),
            "config file '" + numbers + "': 'method.bf16_linears' must be a string, a number, a boolean or an array of strings");
  const std::string listed = write_temp("q2_cfg_listed.toml", "[method]\nscheme = [\"bf16\"]\n");
  EXPECT_NE(error_of([&] { load_config(listed, {}); }).find("option 'method.scheme' expects a string"), std::string::npos);
  nlohmann::json j = to_json(TrainConfig{});
  j["method"]["bf16_linears"] = "attention.wo";
  EXPECT_EQ(error_of([&] { from_json(j); }), "config: 'method.bf16_linears' must be a list of names, got \"attention.wo\"");
}

// Configs stored before the overrides existed run without them.
TEST(TrainConfig, CheckpointConfigWithoutOverrideKeysHasNone) {
  nlohmann::json j = to_json(TrainConfig{});
  for (const char* k : {"bf16_first_layers", "bf16_last_layers", "bf16_linears"}) j["method"].erase(k);
  EXPECT_EQ(from_json(j).precision, model::PrecisionOverrides{});
}

// A [method] key the scheme carries: read from a TOML file, kept by to_json / from_json, passed
// on by method_scheme, and `unset` by default and in configs stored before it.
template <typename T>
void expect_scheme_key(const std::string& key, T TrainConfig::*field, T linear::Scheme::*in_scheme, T value, T unset) {
  SCOPED_TRACE(key);
  std::ostringstream toml;
  toml << "[method]\n" << key << " = " << value << "\n";
  const TrainConfig c = load_config(write_temp("q2_cfg_" + key + ".toml", toml.str()), {});
  EXPECT_EQ(c.*field, value);
  EXPECT_EQ(from_json(to_json(c)).*field, value);
  EXPECT_EQ(method_scheme(c).*in_scheme, value);
  EXPECT_EQ(load_config("", {}).*field, unset);
  nlohmann::json j = to_json(c);
  j["method"].erase(key);
  EXPECT_EQ(from_json(j).*field, unset);
}

// MS-EDEN's fallback (off by default) and the second rotation (one round by default).
TEST(TrainConfig, EdenFallbackKey) {
  expect_scheme_key("eden_fallback", &TrainConfig::eden_fallback, &linear::Scheme::eden_fallback, 0.9, 0.0);
}

TEST(TrainConfig, HadamardRoundsKey) {
  expect_scheme_key("hadamard_rounds", &TrainConfig::hadamard_rounds, &linear::Scheme::hadamard_rounds, 2, 1);
}

TEST(TrainConfig, OutlierSplitKey) {
  expect_scheme_key("outlier_split", &TrainConfig::outlier_split, &linear::Scheme::outlier_split, 0.9, 0.0);
}

// The loss-spike guard's keys: off by default, bad values named; configs stored before them
// read them as off.
TEST(TrainConfig, SpikeGuardKeys) {
  const TrainConfig c = load_config(write_temp("q2_cfg_guard.toml", "[train]\nspike_guard = 4\nspike_window = 20\n"), {});
  EXPECT_EQ(c.spike_guard, 4);
  EXPECT_EQ(c.spike_window, 20);
  EXPECT_EQ(from_json(to_json(c)).spike_guard, 4);
  EXPECT_EQ(from_json(to_json(c)).spike_window, 20);
  EXPECT_EQ(load_config("", {}).spike_guard, 0);
  EXPECT_EQ(error_of([] { load_config("", {"--train.spike_guard=1"}); }),
            "config: train.spike_guard must be 0 (off) or finite and > 1, got 1");
  EXPECT_EQ(error_of([] { load_config("", {"--train.spike_guard=inf"}); }),
            "config: train.spike_guard must be 0 (off) or finite and > 1, got inf");
  EXPECT_EQ(error_of([] { load_config("", {"--train.spike_window=0"}); }),
            "config: train.spike_window must be in [1, 10000], got 0");
  nlohmann::json j = to_json(TrainConfig{});
  for (const char* k : {"spike_guard", "spike_window"}) j["train"].erase(k);
  const TrainConfig old = from_json(j);
  EXPECT_EQ(old.spike_guard, 0);
  EXPECT_EQ(old.spike_window, 50);
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
  opt.step(p, g, 0.01, c, 1, 1.0f);
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
