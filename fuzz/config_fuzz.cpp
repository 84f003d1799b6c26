// q2::train::load_config (src/train/config.cpp) on an arbitrary TOML file. A config it accepts
// must survive what a checkpoint does with it: to_json, dump, parse, from_json, validate.
#include "common/error.h"
#include "fuzz_util.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = q2::fuzz::write_input("config.toml", data, size);
  q2::train::TrainConfig c;
  try {
    c = q2::train::load_config(path, {});
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
    return 0;
  }
  // Outside the try: once accepted, a q2::Error here is a finding too.
  const std::string stored = q2::train::to_json(c).dump();
  const q2::train::TrainConfig back = q2::train::from_json(nlohmann::json::parse(stored));
  q2::train::validate(back);
  if (q2::train::to_json(back).dump() != stored) __builtin_trap();
  return 0;
}
