#pragma once
// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind every random
// decision in quartet2. A random word is addressed by (seed, stream, index): the key is the
// 64-bit seed, the counter is (index / 4 as 64 bits, stream, 0) and the word is
// output[index % 4]. Any thread on any device can therefore regenerate the exact word a
// given element or block used, independent of how work is split.
#include "common/host_device.h"

namespace q2::philox {

struct Block {
  uint32_t v[4];
};
Q2_HD uint32_t mulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

Q2_HD Block philox4x32_10(Block c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t hi0 = mulhi(0xD2511F53u, c.v[0]), lo0 = 0xD2511F53u * c.v[0];
    const uint32_t hi1 = mulhi(0xCD9E8D57u, c.v[2]), lo1 = 0xCD9E8D57u * c.v[2];
    c = Block{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
  }
  return c;
}

// Independent uses of one seed draw from disjoint counter spaces.
enum Stream : uint32_t {
  kElementSR = 1,   // stochastic rounding of FP4 elements, index = row * cols + col
  kScaleSR = 2,     // stochastic rounding of E4M3 block scales, index = row * (cols/16) + block
  kRhtSigns = 3,    // the 128 random signs of a Hadamard rotation, words 0..3
  kData = 4,        // synthetic data for experiments and tests
  kSeeds = 5,       // seeds derived for repeated draws, index = draw
};

// The four words with indices 4*group .. 4*group+3.
Q2_HD Block words4(uint64_t seed, uint32_t stream, uint64_t group) {
  return philox4x32_10(Block{{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), stream, 0u}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

Q2_HD uint32_t word(uint64_t seed, uint32_t stream, uint64_t index) {
  return words4(seed, stream, index >> 2).v[index & 3];
}

// A fresh 64-bit seed for draw `k` of an experiment seeded with `seed`.
Q2_HD uint64_t derive_seed(uint64_t seed, uint64_t k) {
  const Block w = words4(seed, kSeeds, k);
  return (static_cast<uint64_t>(w.v[1]) << 32) | w.v[0];
}

}  // namespace q2::philox
