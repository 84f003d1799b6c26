#pragma once
// Helpers shared by the data tests: a private temporary directory and a small generated corpus.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace q2::data::test {

// A fresh directory named after the running test (or suite, in a suite's set-up), removed when
// the object goes away.
class TempDir {
 public:
  TempDir() {
    const auto* unit = ::testing::UnitTest::GetInstance();
    const auto* test = unit->current_test_info();
    const std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name()
                                  : std::string(unit->current_test_suite()->name());
    path_ = std::filesystem::temp_directory_path() / ("q2_data_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// `n` English-like documents of one to three lines (the later ones indented, as in a
// dictionary entry), deterministic in `seed`.
inline std::vector<std::string> make_documents(int n, uint64_t seed) {
  static const char* const kWords[] = {
      "the",   "of",     "a",      "to",     "in",    "is",    "that",   "which", "or",     "as",
      "act",   "state",  "being",  "quality", "one",  "who",   "any",    "body",  "part",   "form",
      "water", "light",  "stone",  "horse",  "plant", "small", "large",  "used",  "called", "made",
      "from",  "having", "Latin",  "Greek",  "noun",  "verb",  "obs.",   "see",   "also",   "kind"};
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto rnd = [&](uint64_t m) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s % m;
  };
  std::vector<std::string> docs;
  for (int d = 0; d < n; ++d) {
    std::string doc;
    const uint64_t lines = 1 + rnd(3);
    for (uint64_t l = 0; l < lines; ++l) {
      if (l > 0) doc += "\n   ";
      const uint64_t words = 3 + rnd(8);
      for (uint64_t w = 0; w < words; ++w) doc += std::string(w ? " " : "") + kWords[rnd(std::size(kWords))];
      doc += rnd(2) ? "." : ", " + std::to_string(rnd(1000)) + ";";
    }
    doc[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(doc[0])));
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace q2::data::test
