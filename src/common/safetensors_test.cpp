#include "common/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/error_test_util.h"

namespace q2 {
namespace {

namespace fs = std::filesystem;

// A reader written from the format's description: the tensors of one file by name, checking
// that their byte ranges tile the data section in order of offset.
std::map<std::string, SafeTensor> read(const std::string& bytes) {
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  const std::string data = bytes.substr(8 + n);
  std::map<uint64_t, uint64_t> ranges;
  std::map<std::string, SafeTensor> out;
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t a = t["data_offsets"][0], b = t["data_offsets"][1];
    ranges[a] = b;
    out[name] = {name, t["dtype"], t["shape"].get<std::vector<int64_t>>(), data.substr(a, b - a)};
  }
  uint64_t at = 0;
  for (const auto& [a, b] : ranges) {
    EXPECT_EQ(a, at) << "byte ranges must be contiguous";
    at = b;
  }
  EXPECT_EQ(at, data.size());
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

std::vector<SafeTensor> some_tensors() {
  std::vector<SafeTensor> t;
  for (int i = 0; i < 5; ++i) {
    std::string bytes(static_cast<size_t>(4 * 10 * (i + 1)), '\0');
    for (size_t j = 0; j < bytes.size(); ++j) bytes[j] = static_cast<char>(j * 7 + i);
    t.push_back({"t" + std::to_string(i), "F32", {10, i + 1}, bytes});
  }
  t.push_back({"scale", "F32", {}, std::string(4, '\x01')});
  return t;
}

TEST(Safetensors, RoundTripsDtypeShapeAndBytes) {
  const std::vector<SafeTensor> in = some_tensors();
  const std::string file = safetensors_bytes(in, {{"format", "pt"}});
  const auto out = read(file);
  ASSERT_EQ(out.size(), in.size());
  for (const SafeTensor& t : in) {
    EXPECT_EQ(out.at(t.name).dtype, t.dtype);
    EXPECT_EQ(out.at(t.name).shape, t.shape);
    EXPECT_EQ(out.at(t.name).bytes, t.bytes);
  }
}

TEST(Safetensors, RefusesBytesThatDisagreeWithTheShape) {
  EXPECT_EQ(test::error_of([] { safetensors_bytes({{"w", "BF16", {3, 2}, std::string(10, 'x')}}, {}); }),
            "safetensors: tensor 'w' holds 10 bytes, its BF16 shape needs 12");
}

TEST(Safetensors, ShardsAboveTheLimitWithAnIndexCoveringEveryTensor) {
  const fs::path dir = fs::temp_directory_path() / ("q2_safetensors_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "one");
  fs::create_directories(dir / "many");
  const std::vector<SafeTensor> in = some_tensors();
  uint64_t total = 0;
  for (const SafeTensor& t : in) total += t.bytes.size();
  EXPECT_EQ(write_safetensors_model((dir / "one").string(), in, {}, total),
            std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(read(slurp(dir / "one/model.safetensors")).size(), in.size());

  const uint64_t limit = 130;  // t4 (200 bytes) is larger: a shard of its own
  const std::vector<std::string> files = write_safetensors_model((dir / "many").string(), in, {}, limit);
  ASSERT_GT(files.size(), 2u);
  EXPECT_EQ(files.back(), "model.safetensors.index.json");
  EXPECT_FALSE(fs::exists(dir / "many/model.safetensors"));
  const nlohmann::json index = nlohmann::json::parse(slurp(dir / "many/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], total);
  ASSERT_EQ(index["weight_map"].size(), in.size());
  for (size_t i = 0; i + 1 < files.size(); ++i) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", i + 1, files.size() - 1);
    EXPECT_EQ(files[i], want);
    const auto shard = read(slurp(dir / "many" / files[i]));
    uint64_t bytes = 0;
    for (const auto& [name, t] : shard) {
      EXPECT_EQ(index["weight_map"][name], files[i]) << name;
      bytes += t.bytes.size();
    }
    EXPECT_TRUE(bytes <= limit || shard.size() == 1) << files[i] << " holds " << bytes << " bytes";
  }
  for (const SafeTensor& t : in) {
    const auto shard = read(slurp(dir / "many" / index["weight_map"][t.name].get<std::string>()));
    EXPECT_EQ(shard.at(t.name).bytes, t.bytes) << t.name;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace q2
