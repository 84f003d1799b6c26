#include "common/rendezvous.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "common/error.h"

namespace q2 {
namespace {

std::string fresh_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / (name + "." + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

TEST(Rendezvous, LateWriterIsAwaited) {
  const std::string dir = fresh_dir("q2_rdv_late");
  const std::string id(128, '\x7f');
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    publish_rendezvous(dir, id);  // also creates the directory
  });
  const std::string got = await_rendezvous(dir, id.size(), 10);
  writer.join();
  EXPECT_EQ(got, id);
  std::filesystem::remove_all(dir);
}

TEST(Rendezvous, TimeoutNamesTheFile) {
  const std::string dir = fresh_dir("q2_rdv_none");
  std::filesystem::create_directories(dir);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    await_rendezvous(dir, 128, 0.2);
    FAIL() << "no timeout";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(rendezvous_file(dir)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0.2 s"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  std::filesystem::remove_all(dir);
}

TEST(Rendezvous, FileOfTheWrongSizeIsNotAnId) {
  const std::string dir = fresh_dir("q2_rdv_short");
  publish_rendezvous(dir, "short");
  EXPECT_THROW(await_rendezvous(dir, 128, 0.1), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace q2
