#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>

#include "common/crc32.h"
#include "common/error.h"
#include "common/error_test_util.h"

namespace q2::train {
namespace {

model::ModelConfig small() {
  model::ModelConfig c = model::preset("tiny", 64, 32);
  c.n_layers = 1;
  return c;
}

using test::error_of;

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A checkpoint's bytes with its JSON header replaced by edit(header) and `extra` bytes appended to
// its body, under a valid checksum: damage that the CRC alone cannot catch.
std::string rewritten(const std::string& bytes, const std::function<void(nlohmann::json&)>& edit,
                      const std::string& extra = "") {
  uint64_t hlen;
  std::memcpy(&hlen, bytes.data() + 8, 8);
  nlohmann::json h = nlohmann::json::parse(bytes.substr(16, hlen));
  edit(h);
  const std::string hs = h.dump();
  const uint64_t n = hs.size();
  std::string out = bytes.substr(0, 8) + std::string(reinterpret_cast<const char*>(&n), 8) + hs +
                    bytes.substr(16 + hlen, bytes.size() - 4 - 16 - hlen) + extra;
  const uint32_t crc = crc32_of(out.data(), out.size());
  return out + std::string(reinterpret_cast<const char*>(&crc), 4);
}

TEST(Checkpoint, RoundTripsWeightsAndOptimizerAndRejectsDamage) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.bin").string();
  TrainConfig cfg;
  model::Transformer a(small(), linear::scheme_by_name("quartet2"), *backend);
  a.init(5);
  AdamW opt(*backend, a.params());
  Matrix m1 = backend->download(opt.m()[1]);
  m1.data[7] = 0.25f;
  backend->upload(m1, opt.m()[1]);
  save_checkpoint(path, cfg, a, &opt, 42, {{"position", 123}}, {{"vocab_size", 64}});

  model::Transformer b(small(), linear::scheme_by_name("quartet2"), *backend);
  AdamW opt_b(*backend, b.params());
  const CheckpointInfo info = load_checkpoint(path, b, &opt_b, &cfg);
  EXPECT_EQ(info.step, 42);
  EXPECT_EQ(info.header.at("loader").at("position"), 123);
  for (size_t i = 0; i < a.params().size(); ++i)
    EXPECT_EQ(backend->download(a.params()[i].value).data, backend->download(b.params()[i].value).data);
  EXPECT_EQ(backend->download(opt_b.m()[1]).data[7], 0.25f);

  // Another configuration: a different width, or another scheme.
  model::ModelConfig wide = small();
  wide.d_model = 128;
  wide.n_heads = 2;
  model::Transformer c(wide, linear::scheme_by_name("quartet2"), *backend);
  EXPECT_NE(error_of([&] { load_checkpoint(path, c, nullptr, nullptr); }).find("another configuration: d_model"),
            std::string::npos);
  TrainConfig other = cfg;
  other.scheme = "bf16";
  EXPECT_NE(error_of([&] { load_checkpoint(path, b, nullptr, &other); }).find("method.scheme"), std::string::npos);
  other = cfg;
  other.hadamard = 32;
  EXPECT_NE(error_of([&] { load_checkpoint(path, b, nullptr, &other); }).find("method.hadamard (checkpoint 0, now 32)"),
            std::string::npos);

  // A flipped byte, a truncated file, and something that is not a checkpoint.
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x10;
  std::ofstream((dir / "flip.bin").string(), std::ios::binary) << flipped;
  EXPECT_NE(error_of([&] { read_checkpoint_info((dir / "flip.bin").string()); }).find("checksum"), std::string::npos);
  std::ofstream((dir / "trunc.bin").string(), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  EXPECT_NE(error_of([&] { read_checkpoint_info((dir / "trunc.bin").string()); }).find("corrupt or truncated"),
            std::string::npos);
  std::ofstream((dir / "other.bin").string(), std::ios::binary) << "GGUF and more bytes here";
  EXPECT_NE(error_of([&] { read_checkpoint_info((dir / "other.bin").string()); }).find("not a quartet2 checkpoint"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_checkpoint_info((dir / "missing.bin").string()); }).find("cannot open"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_checkpoint_info(dir.string()); }).find("is a folder"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// Every value of the optimizer's state set to a distinct number.
void fill_state(model::Backend& b, Optimizer& opt) {
  float x = 0.5f;
  for (const OptimizerState& s : opt.state()) {
    Matrix m(s.tensor->rows, s.tensor->cols);
    for (float& v : m.data) v = (x += 0.25f);
    b.upload(m, *s.tensor);
  }
}

TEST(Checkpoint, MuonStateRoundTripsAndIsNotTakenForAdamWs) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_muon_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.bin").string();
  TrainConfig cfg;
  cfg.optimizer = "muon";
  model::Transformer a(small(), linear::scheme_by_name("bf16"), *backend);
  a.init(5);
  Muon opt(*backend, a.params(), a.config());
  fill_state(*backend, opt);
  save_checkpoint(path, cfg, a, &opt, 7, {{"position", 1}}, nullptr);
  const CheckpointInfo info = read_checkpoint_info(path);
  EXPECT_EQ(info.optimizer, "muon");
  EXPECT_EQ(info.config.optimizer, "muon");
  // The fused q | k | v keeps three blocks of second moments (one per row of each square block).
  const nlohmann::json& list = info.header.at("optimizer_state");
  const auto entry = std::find_if(list.begin(), list.end(), [](const nlohmann::json& e) {
    return e.at(0) == "layers.0.attention.wqkv.weight:muon.second_moment";
  });
  ASSERT_NE(entry, list.end()) << list.dump();
  EXPECT_EQ((*entry)[2], 3 * 256);

  model::Transformer b(small(), linear::scheme_by_name("bf16"), *backend);
  Muon opt_b(*backend, b.params(), b.config());
  load_checkpoint(path, b, &opt_b, &cfg);
  const auto sa = opt.state(), sb = opt_b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_EQ(backend->download(*sa[i].tensor).data, backend->download(*sb[i].tensor).data) << sa[i].name;

  // AdamW's state cannot be read from it, resumed or not.
  AdamW adamw(*backend, b.params());
  EXPECT_NE(error_of([&] { load_checkpoint(path, b, &adamw, nullptr); })
                .find("holds the state of optimizer 'muon', which does not fit this run's 'adamw'"),
            std::string::npos);
  TrainConfig as_adamw = cfg;
  as_adamw.optimizer = "adamw";
  EXPECT_NE(error_of([&] { load_checkpoint(path, b, &adamw, &as_adamw); })
                .find("train.optimizer (checkpoint \"muon\", now \"adamw\")"),
            std::string::npos);
  // A state list that disagrees with the body's size.
  const std::string bad = (dir / "bad.bin").string();
  std::ofstream(bad, std::ios::binary) << rewritten(read_all(path), [](nlohmann::json& h) {
    h["optimizer_state"][0][1] = 2;
  });
  EXPECT_NE(error_of([&] { read_checkpoint_info(bad); }).find("bytes of tensor data"), std::string::npos);
  std::ofstream(bad, std::ios::binary) << rewritten(read_all(path), [](nlohmann::json& h) {
    h["optimizer_state"][0][1] = -1;
  });
  EXPECT_NE(error_of([&] { read_checkpoint_info(bad); }).find("malformed header: optimizer_state"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, ThoseFromBeforeMuonLoadAsAdamW) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_legacy_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.bin").string(), old = (dir / "old.bin").string();
  model::Transformer a(small(), linear::scheme_by_name("bf16"), *backend);
  a.init(2);
  AdamW opt(*backend, a.params());
  fill_state(*backend, opt);
  save_checkpoint(path, TrainConfig{}, a, &opt, 3, {{"position", 1}}, nullptr);
  // As written before train.optimizer existed: no optimizer keys in the header or the config.
  std::ofstream(old, std::ios::binary) << rewritten(read_all(path), [](nlohmann::json& h) {
    h.erase("optimizer");
    h.erase("optimizer_state");
    for (const char* k : {"optimizer", "matrix_lr", "embedding_lr", "head_lr", "scalar_lr", "muon_momentum",
                          "muon_momentum_start", "muon_momentum_warmup", "muon_beta2", "muon_weight_decay", "muon_ns"}) {
      ASSERT_TRUE(h["config"]["train"].contains(k)) << k;
      h["config"]["train"].erase(k);
    }
  });
  const CheckpointInfo info = read_checkpoint_info(old);
  EXPECT_EQ(info.optimizer, "adamw");
  EXPECT_EQ(info.config.optimizer, "adamw");
  model::Transformer b(small(), linear::scheme_by_name("bf16"), *backend);
  AdamW opt_b(*backend, b.params());
  load_checkpoint(old, b, &opt_b, &info.config);
  for (size_t i = 0; i < opt.v().size(); ++i)
    EXPECT_EQ(backend->download(opt.v()[i]).data, backend->download(opt_b.v()[i]).data) << i;
  TrainConfig muon = info.config;
  muon.optimizer = "muon";
  Muon opt_m(*backend, b.params(), b.config());
  EXPECT_NE(error_of([&] { load_checkpoint(old, b, &opt_m, &muon); })
                .find("train.optimizer (checkpoint \"adamw\", now \"muon\")"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, IsNeverWrittenFromNonFiniteValues) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_nan_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.bin").string();
  model::Transformer a(small(), linear::scheme_by_name("bf16"), *backend);
  a.init(1);
  AdamW opt(*backend, a.params());
  save_checkpoint(path, TrainConfig{}, a, &opt, 1, nullptr, nullptr);
  const std::string before = read_all(path);
  for (const float bad : {std::nanf(""), INFINITY}) {
    for (const bool in_optimizer : {false, true}) {
      model::Tensor& t = in_optimizer ? opt.v()[2] : a.params()[2].value;
      Matrix m = backend->download(t);
      const float keep = m.data[3];
      m.data[3] = bad;
      backend->upload(m, t);
      const std::string e = error_of([&] { save_checkpoint(path, TrainConfig{}, a, &opt, 2, nullptr, nullptr); });
      EXPECT_NE(e.find("not written"), std::string::npos) << e;
      EXPECT_NE(e.find(in_optimizer ? "second moment" : "the weights"), std::string::npos) << e;
      EXPECT_NE(e.find(a.params()[2].name), std::string::npos) << e;
      EXPECT_EQ(read_all(path), before) << "the previous checkpoint must stay as it was";
      m.data[3] = keep;
      backend->upload(m, t);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, BodyMustMatchTheHeadersParameterList) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_body_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.bin").string(), bad = (dir / "bad.bin").string();
  model::ModelConfig two = small();
  two.n_layers = 2;
  model::Transformer a(two, linear::scheme_by_name("bf16"), *backend);
  a.init(3);
  save_checkpoint(path, TrainConfig{}, a, nullptr, 1, nullptr, nullptr);
  const std::string bytes = read_all(path);
  // Loads the way `eval` does: a model built from the checkpoint's own header.
  auto load_as_eval = [&] {
    const CheckpointInfo info = read_checkpoint_info(bad);
    model::Transformer m(info.model, linear::scheme_by_name("bf16"), *backend);
    load_checkpoint(bad, m, nullptr, nullptr);
  };
  // A header edited to one layer: the body holds two; so with the parameter list edited too.
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json& h) { h["model"]["n_layers"] = 1; });
  EXPECT_NE(error_of(load_as_eval).find("bytes of tensor data"), std::string::npos) << error_of(load_as_eval);
  model::ModelConfig one = small();
  model::Transformer b(one, linear::scheme_by_name("bf16"), *backend);
  nlohmann::json one_params = nlohmann::json::array();
  for (const model::Param& p : b.params()) one_params.push_back({p.name, p.value.rows, p.value.cols});
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [&](nlohmann::json& h) {
    h["model"]["n_layers"] = 1;
    h["params"] = one_params;
  });
  EXPECT_NE(error_of(load_as_eval).find("bytes of tensor data"), std::string::npos) << error_of(load_as_eval);
  // The right size, but a parameter list in another order than the model's.
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json& h) {
    std::reverse(h["params"].begin(), h["params"].end());
  });
  EXPECT_NE(error_of(load_as_eval).find("parameter list"), std::string::npos) << error_of(load_as_eval);
  // A header asking for a model far larger than the file is refused before any model is built.
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json& h) { h["model"]["n_layers"] = 4000; });
  EXPECT_NE(error_of([&] { read_checkpoint_info(bad); }).find("bytes of tensor data"), std::string::npos);
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json& h) { h["step"] = 1e30; });
  EXPECT_NE(error_of([&] { read_checkpoint_info(bad); }).find("malformed header: step"), std::string::npos);
  // Trailing bytes after the tensors, and a header claiming optimizer state that is not there.
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json&) {}, "xxxx");
  EXPECT_NE(error_of(load_as_eval).find("bytes of tensor data"), std::string::npos);
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json& h) { h["has_optimizer"] = true; });
  EXPECT_NE(error_of(load_as_eval).find("bytes of tensor data"), std::string::npos);
  // Unedited, it loads.
  std::ofstream(bad, std::ios::binary) << rewritten(bytes, [](nlohmann::json&) {});
  EXPECT_EQ(error_of(load_as_eval), "no error");
  std::filesystem::remove_all(dir);
}


// Every model option is in the checkpoint's model config and comes back; a model that differs
// in one is refused naming it; a checkpoint from before the options existed (a header without
// their keys) reads as the Llama model it is, and loads.
TEST(Checkpoint, ModelOptionsRoundTripAndOlderHeadersReadAsLlama) {
  const auto backend = model::make_cpu_backend();
  const auto dir = std::filesystem::temp_directory_path() / "q2_ckpt_options_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "nano.bin").string(), llama = (dir / "llama.bin").string(),
                    old = (dir / "old.bin").string();
  model::ModelConfig nano = model::nanochat_architecture(small());
  nano.n_kv_heads = 2;
  nano.tie_embeddings = true;
  nano.window_pattern = "SL";
  const TrainConfig cfg;
  model::Transformer a(nano, linear::scheme_by_name("bf16"), *backend);
  a.init(1);
  save_checkpoint(path, cfg, a, nullptr, 3, {{"position", 0}}, {{"vocab_size", 64}});
  const CheckpointInfo info = read_checkpoint_info(path);
  EXPECT_EQ(model::to_json(info.model), model::to_json(nano));
  model::Transformer b(info.model, linear::scheme_by_name("bf16"), *backend);
  load_checkpoint(path, b, nullptr, nullptr);
  for (size_t i = 0; i < a.params().size(); ++i)
    EXPECT_EQ(backend->download(a.params()[i].value).data, backend->download(b.params()[i].value).data);
  model::ModelConfig other = nano;
  other.window_pattern = "L";
  model::Transformer c(other, linear::scheme_by_name("bf16"), *backend);
  EXPECT_NE(error_of([&] { load_checkpoint(path, c, nullptr, nullptr); }).find("window_pattern (checkpoint \"SL\", now \"L\")"),
            std::string::npos);

  model::Transformer l(small(), linear::scheme_by_name("bf16"), *backend);
  l.init(2);
  save_checkpoint(llama, cfg, l, nullptr, 3, {{"position", 0}}, {{"vocab_size", 64}});
  std::ofstream(old, std::ios::binary) << rewritten(read_all(llama), [](nlohmann::json& h) {
    for (const char* key : {"n_kv_heads", "mlp", "qk_norm", "tie_embeddings", "norm_weights", "embed_norm",
                            "resid_x0_lambdas", "logit_softcap", "window_pattern", "init"})
      h["model"].erase(key);
  });
  EXPECT_EQ(model::to_json(read_checkpoint_info(old).model), model::to_json(small()));
  model::Transformer l2(small(), linear::scheme_by_name("bf16"), *backend);
  EXPECT_EQ(error_of([&] { load_checkpoint(old, l2, nullptr, nullptr); }), "no error");
  EXPECT_EQ(backend->download(l2.params()[1].value).data, backend->download(l.params()[1].value).data);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace q2::train
