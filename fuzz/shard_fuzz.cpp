// q2::data::read_shard_info and read_shard (src/data/shard.cpp) on arbitrary bytes.
#include "common/error.h"
#include "data/shard.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = q2::fuzz::write_input("in.bin", data, size);
  bool info_ok = false;
  q2::data::ShardInfo info;
  try {
    info = q2::data::read_shard_info(path);
    info_ok = true;
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
  }
  try {
    const q2::data::Shard s = q2::data::read_shard(path);
    // read_shard accepts only what read_shard_info accepts, and agrees with it.
    if (!info_ok || s.vocab_size != info.vocab_size || s.tokens.size() != info.token_count) __builtin_trap();
    for (uint32_t t : s.tokens)
      if (t >= s.vocab_size) __builtin_trap();
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
  }
  return 0;
}
