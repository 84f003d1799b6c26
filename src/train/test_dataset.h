#pragma once
// Test helper: a small prepared dataset (vocabulary 300) for the training tests, built once per
// process under a folder of the process's own (ctest runs each test in a process of its own, in
// parallel), which is removed at exit.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/dataset.h"

namespace q2::test {

inline std::filesystem::path test_root() {
  return std::filesystem::temp_directory_path() / ("q2_trainer_test_" + std::to_string(::getpid()));
}

struct RemoveTestRoot {
  ~RemoveTestRoot() { std::filesystem::remove_all(test_root()); }
};
inline RemoveTestRoot remove_test_root_at_exit;

// Made first: making it clears test_root().
inline const std::string& dataset_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path root = test_root();
    fs::remove_all(root);
    fs::create_directories(root);
    std::ofstream text(root / "corpus.txt");
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "quartet", "scale",
                           "model", "gradient", "hadamard", "rounding", "unbiased", "tensor"};
    uint32_t x = 12345;
    for (int doc = 0; doc < 400; ++doc) {
      for (int w = 0; w < 60; ++w) {
        x = x * 1103515245u + 12345u;
        text << words[(x >> 16) % 16] << (w % 12 == 11 ? ".\n" : " ");
      }
      text << "\n\n";
    }
    text.close();
    data::PrepareOptions o;
    o.corpus = (root / "corpus.txt").string();
    o.vocab = 300;
    o.out = (root / "data").string();
    o.val_fraction = 0.05;
    data::prepare(o, [](const std::string&) {});
    return o.out;
  }();
  return dir;
}

}  // namespace q2::test
