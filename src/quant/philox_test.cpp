#include "quant/philox.h"

#include <gtest/gtest.h>

namespace q2 {
namespace {

// Known-answer vectors published with Random123 (kat_vectors): counter, key, output.
TEST(Philox, MatchesPublishedKnownAnswers) {
  struct Kat {
    philox::Block ctr;
    uint32_t k0, k1;
    philox::Block out;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{~0u, ~0u, ~0u, ~0u}}, ~0u, ~0u, {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    const philox::Block o = philox::philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(o.v[i], k.out.v[i]);
  }
}

TEST(Philox, WordsAreAddressedBySeedStreamAndIndex) {
  const uint64_t seed = 0x123456789abcdefull;
  for (uint64_t i = 0; i < 64; ++i)
    EXPECT_EQ(philox::word(seed, philox::kElementSR, i), philox::words4(seed, philox::kElementSR, i / 4).v[i % 4]);
  EXPECT_NE(philox::word(seed, philox::kElementSR, 5), philox::word(seed, philox::kScaleSR, 5));
  EXPECT_NE(philox::word(seed, philox::kElementSR, 5), philox::word(seed + 1, philox::kElementSR, 5));
  // High index bits reach the counter: indices 2^34 apart differ.
  EXPECT_NE(philox::word(seed, philox::kData, 1), philox::word(seed, philox::kData, 1 + (1ull << 34)));
  EXPECT_NE(philox::derive_seed(seed, 0), philox::derive_seed(seed, 1));
}

}  // namespace
}  // namespace q2
