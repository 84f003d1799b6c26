// q2::load_npy (src/common/npy.cpp) on arbitrary bytes.
#include "common/error.h"
#include "common/npy.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = q2::fuzz::write_input("in.npy", data, size);
  try {
    const q2::Matrix m = q2::load_npy(path);
    // What a caller relies on: the data holds rows x cols values.
    if (m.rows < 0 || m.cols < 0 || m.data.size() != static_cast<size_t>(m.rows) * static_cast<size_t>(m.cols))
      __builtin_trap();
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
  }
  return 0;
}
