#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/test_util.h"

namespace q2::data {
namespace {

constexpr uint32_t kVocab = 400;

uint64_t byte_sum(const Tokenizer& tok, const std::vector<uint32_t>& ids) {
  uint64_t n = 0;
  for (const uint32_t id : ids) n += tok.byte_lengths().at(id);
  return n;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    std::ofstream f(*dir_ / "train.txt");
    for (const auto& d : test::make_documents(600, 1)) f << d << '\n';
    f.close();
    train_tokenizer(*dir_ / "train.txt", kVocab, *dir_ / "tok.model");
  }
  static void TearDownTestSuite() { delete dir_; }
  static test::TempDir* dir_;
};
test::TempDir* TokenizerTest::dir_ = nullptr;

TEST_F(TokenizerTest, TrainsTheRequestedVocabularyWithFixedSpecialIds) {
  const Tokenizer tok = Tokenizer::load(*dir_ / "tok.model");
  EXPECT_EQ(tok.vocab_size(), kVocab);
  EXPECT_FALSE(std::filesystem::exists(*dir_ / "tok.vocab"));
  EXPECT_EQ(tok.bos_id(), 1u);
  ASSERT_EQ(tok.byte_lengths().size(), kVocab);
  EXPECT_EQ(tok.byte_lengths()[tok.bos_id()], 0u);
  EXPECT_EQ(tok.encode("\n"), std::vector<uint32_t>{2});
  EXPECT_EQ(tok.byte_lengths()[2], 1u);
  // BPE merged frequent words into single pieces.
  EXPECT_LT(tok.encode("the quality of the water").size(), 10u);
}

TEST_F(TokenizerTest, AVocabularyWithoutRoomBeyondTheReservedIdsIsNamed) {
  try {
    train_tokenizer(*dir_ / "train.txt", 259, *dir_ / "small.model");
    FAIL() << "259 tokens leave no room for a learned piece";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a vocabulary of 259 tokens is too small"), std::string::npos) << e.what();
  }
}

TEST_F(TokenizerTest, RoundTripsTextExactly) {
  const Tokenizer tok = Tokenizer::load(*dir_ / "tok.model");
  for (const std::string& text : {std::string("The act of the horse, 17;\n   see also Latin."),
                                 std::string("  leading spaces,  double  spaces\n\n\ttab and trailing "),
                                 std::string("Unseen: QXZ {}|~ 0123456789")}) {
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  }
}

TEST_F(TokenizerTest, ByteLengthsSumToTheDecodedUtf8Length) {
  const Tokenizer tok = Tokenizer::load(*dir_ / "tok.model");
  for (const std::string& text : {std::string("The body of a small plant.\n   Greek, 42;"),
                                 std::string("na\u00EFve caf\u00E9 \u2014 \u6F22\u5B57 \U0001F600 end")}) {
    const auto ids = tok.encode(text);
    const std::string back = tok.decode(ids);
    EXPECT_EQ(back, text);
    EXPECT_EQ(byte_sum(tok, ids), back.size()) << text;
  }
  // Every piece on its own, except <unk> (whose surface is a placeholder) and byte tokens
  // (a lone byte is not valid UTF-8).
  for (uint32_t id = 3 + 256; id < tok.vocab_size(); ++id)
    EXPECT_EQ(tok.byte_lengths()[id], tok.decode({id}).size()) << "piece " << id;
}

TEST_F(TokenizerTest, CopiesShareOneModel) {
  Tokenizer a = Tokenizer::load(*dir_ / "tok.model");
  const Tokenizer b = a;
  const Tokenizer c = std::move(a);
  EXPECT_EQ(&b.byte_lengths(), &c.byte_lengths());
}

TEST(Tokenizer, ErrorsNameTheFile) {
  test::TempDir dir;
  EXPECT_THROW(Tokenizer::load(dir / "missing.model"), Error);
  EXPECT_THROW(train_tokenizer(dir / "missing.txt", 300, dir / "t.model"), Error);
  std::ofstream(dir / "tiny.txt") << "ab\n";
  EXPECT_THROW(train_tokenizer(dir / "tiny.txt", 300, dir / "t.vocab"), Error);
}

}  // namespace
}  // namespace q2::data
