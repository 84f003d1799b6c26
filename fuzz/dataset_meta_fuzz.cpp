// q2::data::load_dataset (src/data/prepare.cpp) on a directory holding an arbitrary meta.json
// beside a real prepared dataset (fuzz/data/dataset: tokenizer.model, train_000.bin,
// train_001.bin, val.bin, made by fuzz/make_seeds.cpp with data::prepare).
#include <filesystem>

#include "common/error.h"
#include "data/dataset.h"
#include "fuzz_util.h"

#ifndef Q2_FUZZ_DATA_DIR
#error "Q2_FUZZ_DATA_DIR (fuzz/data) is set by fuzz/CMakeLists.txt"
#endif

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = q2::fuzz::work_dir() + "/dataset";
    fs::copy(fs::path(Q2_FUZZ_DATA_DIR) / "dataset", d, fs::copy_options::recursive);
    return d;
  }();
  q2::fuzz::write_input("dataset/meta.json", data, size);
  try {
    q2::data::load_dataset(dir);
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
  }
  return 0;
}
