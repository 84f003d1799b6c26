#include "train/sampling.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data/test_util.h"
#include "linear/scheme.h"

namespace q2::train {
namespace {

// Stopping at a token cuts the sequence right after that token's first generation, and changes
// nothing before it.
TEST(Sampling, StopsRightAfterTheStopToken) {
  const auto backend = model::make_cpu_backend();
  const model::ModelConfig c = {.preset = "micro", .n_layers = 1, .d_model = 32, .n_heads = 2, .d_ff = 48,
                                .vocab = 6, .seq_len = 16};
  model::Transformer m(c, linear::scheme_by_name("bf16"), *backend);
  m.init(3);
  for (const double temperature : {0.0, 1.0}) {
    SampleOptions o;
    o.max_new_tokens = 24;
    o.temperature = temperature;
    const std::vector<uint32_t> all = sample(m, {1}, o);
    ASSERT_EQ(all.size(), 25u);
    // A token that appears among the generated ones (vocabulary 6: some token repeats).
    const uint32_t stop = all[5];
    size_t first = 1;
    while (all[first] != stop) ++first;
    o.stop_token = stop;
    const std::vector<uint32_t> cut = sample(m, {1}, o);
    EXPECT_EQ(cut, std::vector<uint32_t>(all.begin(), all.begin() + static_cast<int64_t>(first) + 1)) << temperature;
  }
}

// Every BOS shows as "<s>" where it stands; the text between is the tokenizer's own decode.
TEST(Sampling, TextShowsEachBosWhereItStands) {
  data::test::TempDir dir;
  {
    std::ofstream f(dir / "train.txt");
    for (const auto& d : data::test::make_documents(300, 2)) f << d << '\n';
  }
  data::train_tokenizer(dir / "train.txt", 400, dir / "tok.model");
  const data::Tokenizer tok = data::Tokenizer::load(dir / "tok.model");
  const std::vector<uint32_t> a = tok.encode("the end."), b = tok.encode("A new one");
  std::vector<uint32_t> ids = a;
  ids.push_back(tok.bos_id());
  ids.insert(ids.end(), b.begin(), b.end());
  ids.push_back(tok.bos_id());
  EXPECT_EQ(text_showing_bos(tok, ids), "the end.<s>A new one<s>");
  EXPECT_EQ(tok.decode(ids), "the end.A new one");  // what plain decoding shows
}

}  // namespace
}  // namespace q2::train
