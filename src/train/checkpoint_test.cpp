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
