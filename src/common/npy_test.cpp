#include "common/npy.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "common/error.h"
#include "eval/grad_error.h"

namespace q2 {
namespace {

std::string temp_dir() {
  const auto d = std::filesystem::temp_directory_path() / ("q2_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

TEST(Npy, RoundTripsAndLoadsLayerOperands) {
  const std::string dir = temp_dir();
  Matrix m(3, 5);
  for (int64_t i = 0; i < m.size(); ++i) m.data[i] = 0.5f * static_cast<float>(i) - 3.0f;
  save_npy(dir + "/m.npy", m);
  const Matrix back = load_npy(dir + "/m.npy");
  EXPECT_EQ(back.rows, 3);
  EXPECT_EQ(back.cols, 5);
  EXPECT_EQ(back.data, m.data);

  save_npy(dir + "/x.npy", Matrix(4, 16));
  save_npy(dir + "/w.npy", Matrix(8, 16));
  save_npy(dir + "/dy.npy", Matrix(4, 7));  // wrong: should be [4, 8]
  try {
    eval::load_operands(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not form a linear layer"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(Npy, CorruptFilesAreNamed) {
  const std::string dir = temp_dir();
  std::ofstream(dir + "/bad.npy") << "not numpy";
  EXPECT_THROW(load_npy(dir + "/bad.npy"), Error);
  save_npy(dir + "/t.npy", Matrix(64, 64));
  std::filesystem::resize_file(dir + "/t.npy", 1000);  // truncated
  try {
    load_npy(dir + "/t.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
  EXPECT_THROW(load_npy(dir + "/missing.npy"), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace q2
