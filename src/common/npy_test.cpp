#include "common/npy.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <unistd.h>

#include "common/error.h"
#include "common/error_test_util.h"

namespace q2 {
namespace {

// A .npy file (version 1.0 or 2.0) with the given header dict, padded as numpy pads it, and data bytes.
void write_npy(const std::string& path, std::string dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  dict.append(63 - (prefix + dict.size()) % 64, ' ');
  dict += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += static_cast<char>(major);
  bytes += '\0';
  const uint32_t len = static_cast<uint32_t>(dict.size());
  bytes.append(reinterpret_cast<const char*>(&len), major == 1 ? 2 : 4);
  std::ofstream(path, std::ios::binary) << bytes << dict << data;
}

std::string floats(std::initializer_list<float> v) {
  return {reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float)};
}

std::string temp_dir() {
  const auto d = std::filesystem::temp_directory_path() / ("q2_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

TEST(Npy, RoundTrips) {
  const std::string dir = temp_dir();
  Matrix m(3, 5);
  for (int64_t i = 0; i < m.size(); ++i) m.data[i] = 0.5f * static_cast<float>(i) - 3.0f;
  save_npy(dir + "/m.npy", m);
  const Matrix back = load_npy(dir + "/m.npy");
  EXPECT_EQ(back.rows, 3);
  EXPECT_EQ(back.cols, 5);
  EXPECT_EQ(back.data, m.data);
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

TEST(Npy, ReadsFloat64AndVersion2Headers) {
  const std::string dir = temp_dir();
  const double d[] = {1.5, -2.25, 3.0, 0.0, 1e-3, -7.0};
  write_npy(dir + "/d.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            std::string(reinterpret_cast<const char*>(d), sizeof d), 2);
  const Matrix m = load_npy(dir + "/d.npy");
  ASSERT_EQ(m.rows, 2);
  ASSERT_EQ(m.cols, 3);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(m.data[i], static_cast<float>(d[i]));
  // More than one chunk of float64 (2^20 values) is converted.
  std::vector<double> big(3 * 400'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = 0.5 * static_cast<double>(i) - 1000.0;
  write_npy(dir + "/big.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 400000), }",
            std::string(reinterpret_cast<const char*>(big.data()), big.size() * sizeof(double)));
  const Matrix b = load_npy(dir + "/big.npy");
  ASSERT_EQ(b.size(), static_cast<int64_t>(big.size()));
  for (size_t i = 0; i < big.size(); ++i) ASSERT_EQ(b.data[i], static_cast<float>(big[i])) << i;
  // Keys in any order, double quotes, no trailing comma: still the same Python dict.
  write_npy(dir + "/o.npy", "{\"shape\": (1, 2), \"fortran_order\": False, \"descr\": \"<f4\"}", floats({4, 5}));
  EXPECT_EQ(load_npy(dir + "/o.npy").data, (std::vector<float>{4, 5}));
  std::filesystem::remove_all(dir);
}

// A duplicate (once silently read as the first 'descr'), unknown or missing key, or a malformed value
// is refused with the reason.
TEST(Npy, HeadersAreParsedStrictly) {
  const std::string dir = temp_dir(), path = dir + "/h.npy";
  auto error = [&](const std::string& dict, const std::string& data = floats({1, 2, 3, 4})) {
    write_npy(path, dict, data);
    return test::error_of([&] { load_npy(path); });
  };
  EXPECT_EQ(error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"), "no error");
  EXPECT_NE(error("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }")
                .find("'" + path + "': bad .npy header: key 'descr' appears twice"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'shape': (1, 4), }").find("appears twice"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'big_endian': True}")
                .find("unknown key 'big_endian'"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'shape': (2, 2), }").find("no 'fortran_order' key"), std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), } junk").find("after the closing brace"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2), }").find("neither True nor False"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }").find("not descr '>f4'"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }").find("Fortran-order"),
            std::string::npos);
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }").find("2-D array, shape has 1 dimension"),
            std::string::npos);
  for (const std::string dim : {"-2", "2.0", "0x2", "two", ""}) {
    const std::string e = error("{'descr': '<f4', 'fortran_order': False, 'shape': (" + dim + ", 2), }");
    EXPECT_NE(e.find("dimension '" + dim + "' is not a number"), std::string::npos) << e;
  }
  // 24 digits: once "internal error: stoll".
  EXPECT_NE(error("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000000000, 2), }")
                .find("dimension '100000000000000000000000' is not a number from 0 to 9223372036854775807"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Npy, ShapeMustMatchTheFileSizeBeforeAnythingIsAllocated) {
  const std::string dir = temp_dir(), path = dir + "/s.npy";
  auto error = [&](const std::string& shape) {
    write_npy(path, "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }", floats({1, 2, 3, 4}));
    return test::error_of([&] { load_npy(path); });
  };
  // (2^62, 16) once segfaulted: the element count wrapped around.
  EXPECT_EQ(error("(4611686018427387904, 16)"),
            "'" + path + "': shape (4611686018427387904, 16): 4611686018427387904 x 16 overflows a 64-bit integer");
  EXPECT_NE(error("(2305843009213693952, 2)").find("(elements x bytes each): 4611686018427387904 x 4 overflows"),
            std::string::npos);
  // 64 TiB would be allocated before reading found the data short.
  EXPECT_EQ(error("(1099511627776, 16)"),
            "'" + path + "': shape (1099511627776, 16): truncated data: needs 70368744177664 bytes, the file holds 16");
  EXPECT_EQ(error("(1, 3)"), "'" + path + "': shape (1, 3): 4 bytes after the data");
  EXPECT_EQ(error("(1, 4)"), "no error");

  save_npy(path, Matrix(2, 2));
  std::ofstream(path, std::ios::app | std::ios::binary) << "x";
  EXPECT_NE(test::error_of([&] { load_npy(path); }).find("1 bytes after the data"), std::string::npos);
  // A header length past the end of the file.
  std::ofstream(path, std::ios::binary) << std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12);
  EXPECT_NE(test::error_of([&] { load_npy(path); }).find("truncated .npy header"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace q2
