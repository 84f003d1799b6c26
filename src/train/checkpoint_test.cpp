#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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
  save_checkpoint(path, cfg, a, &opt, 42, {{"position", 123}});

  model::Transformer b(small(), linear::scheme_by_name("quartet2"), *backend);
  AdamW opt_b(*backend, b.params());
  const CheckpointInfo info = load_checkpoint(path, b, &opt_b, "quartet2");
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
  EXPECT_NE(error_of([&] { load_checkpoint(path, c, nullptr, "quartet2"); }).find("another configuration: d_model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_checkpoint(path, b, nullptr, "bf16"); }).find("scheme"), std::string::npos);

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
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace q2::train
