#include "data/corpus.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/error_test_util.h"
#include "data/test_util.h"

namespace q2::data {
namespace {

const std::string kText =
    "Abdicator \\Ab\"di*ca`tor\\, n.\n"
    "   One who abdicates.\n"
    "\n"
    "   2. A second sense, after an inner blank line.\n"
    "\n"
    "\n"
    "Second paragraph, first line;\n"
    "second line.\n"
    "\n";
const std::vector<std::string> kDocs = {
    "Abdicator \\Ab\"di*ca`tor\\, n.\n   One who abdicates.\n\n   2. A second sense, after an inner blank line.",
    "Second paragraph, first line;\nsecond line."};

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// mode "wb" writes a new file, "ab" appends another gzip member.
void write_gzip(const std::string& path, const std::string& text, const char* mode = "wb") {
  gzFile gz = gzopen(path.c_str(), mode);
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string error_of(const std::string& spec) {
  return q2::test::error_of([&] { read_corpus(spec); });
}

TEST(Corpus, SplitsAtBlankLinesBeforeUnindentedLines) {
  EXPECT_EQ(split_documents(kText), kDocs);
  EXPECT_EQ(split_documents("\n\n  \nOnly one.\n  \n"), std::vector<std::string>{"Only one."});
  EXPECT_TRUE(split_documents("\n \t\n").empty());
}

TEST(Corpus, InvalidUtf8IsReadAsWindows1252) {
  EXPECT_EQ(to_valid_utf8("don\x92t fa\xE7" "ade"), "don\u2019t fa\u00E7ade");
  EXPECT_EQ(to_valid_utf8("caf\u00E9 \u2014 \U0001F600"), "caf\u00E9 \u2014 \U0001F600");  // valid: unchanged
  EXPECT_EQ(to_valid_utf8("\xE2\x80"), "\u00E2\u20AC");                                       // cut-off sequence
}

TEST(Corpus, ReadsATextFile) {
  test::TempDir dir;
  write_text(dir / "a.txt", kText);
  EXPECT_EQ(read_corpus(dir / "a.txt"), kDocs);
}

TEST(Corpus, ReadsADirectoryInPathOrderSkippingBinaryFiles) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "sub");
  write_text(dir / "sub/b.txt", "Bee.\n");
  write_text(dir / "c.txt", "Sea.\n\nSee.\n");
  write_text(dir / "a.txt", "Ay.\n");
  write_text(dir / "blob.bin", std::string("Binary\0data", 11));
  EXPECT_EQ(read_corpus(dir.str()), (std::vector<std::string>{"Ay.", "Sea.", "See.", "Bee."}));
  EXPECT_THROW(read_corpus(dir / "blob.bin"), Error);
}

TEST(Corpus, ReadsACommaSeparatedListInOrderSharingMaxBytes) {
  test::TempDir dir;
  write_text(dir / "a.txt", "Ay.\n\nAye.\n");
  write_text(dir / "b.txt", "Bee.\n");
  const std::string both = dir / "a.txt" + std::string(",") + (dir / "b.txt");
  EXPECT_EQ(read_corpus(both), (std::vector<std::string>{"Ay.", "Aye.", "Bee."}));
  // The budget runs out inside the first corpus: the second is not read at all.
  EXPECT_EQ(read_corpus(both, 8), (std::vector<std::string>{"Ay."}));
  EXPECT_THROW(read_corpus(both + ","), Error);
}

TEST(Corpus, ReadsGzipAndZstdFiles) {
  test::TempDir dir;
  write_gzip(dir / "t.gz", kText);
  EXPECT_EQ(read_corpus(dir / "t.gz"), kDocs);

  std::string z(ZSTD_compressBound(kText.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), kText.data(), kText.size(), 3));
  write_text(dir / "t.zst", z);
  EXPECT_EQ(read_corpus(dir / "t.zst"), kDocs);
  write_text(dir / "cut.zst", z.substr(0, z.size() - 4));
  EXPECT_THROW(read_corpus(dir / "cut.zst"), Error);
}

// gzread hands back what it decoded of a cut stream without failing; every cut must be caught.
TEST(Corpus, RejectsEveryTruncationOfAGzipFile) {
  test::TempDir dir;
  write_gzip(dir / "t.gz", kText);
  const std::string z = read_bytes(dir / "t.gz");
  for (size_t n = 2; n < z.size(); ++n) {
    write_text(dir / "cut.gz", z.substr(0, n));
    const std::string e = error_of(dir / "cut.gz");
    EXPECT_NE(e.find("corpus file '" + (dir / "cut.gz") + "': truncated gzip stream"), std::string::npos)
        << n << " of " << z.size() << " bytes: " << e;
  }
  // One byte cannot even hold the gzip magic, so zlib would pass it through as text.
  write_text(dir / "cut.gz", z.substr(0, 1));
  EXPECT_NE(error_of(dir / "cut.gz").find("not gzip data"), std::string::npos);
  write_text(dir / "plain.gz", kText);
  EXPECT_NE(error_of(dir / "plain.gz").find("'" + (dir / "plain.gz") + "': not gzip data"), std::string::npos);
  EXPECT_EQ(read_corpus(dir / "t.gz"), kDocs);  // the whole file still reads
}

// Concatenated members (what `cat a.gz b.gz` makes) are one stream; a cut in the last is still caught.
TEST(Corpus, ReadsConcatenatedGzipMembers) {
  test::TempDir dir;
  const size_t half = kText.find("Second");
  write_gzip(dir / "two.gz", kText.substr(0, half));
  write_gzip(dir / "two.gz", kText.substr(half), "ab");
  EXPECT_EQ(read_corpus(dir / "two.gz"), kDocs);
  const std::string z = read_bytes(dir / "two.gz");
  write_text(dir / "cut.gz", z.substr(0, z.size() - 3));
  EXPECT_NE(error_of(dir / "cut.gz").find("truncated gzip stream"), std::string::npos);
}

TEST(Corpus, MaxBytesStopsReadingAndDropsTheCutDocument) {
  test::TempDir dir;
  const std::string text = "One.\n\nTwo two.\n\nThree.\n";
  write_text(dir / "a.txt", text);
  write_text(dir / "b.txt", text);
  // "Two two." ends at byte 14, but only the next document's first byte proves it complete.
  EXPECT_EQ(read_corpus(dir / "a.txt", 16), (std::vector<std::string>{"One."}));
  EXPECT_EQ(read_corpus(dir / "a.txt", 17), (std::vector<std::string>{"One.", "Two two."}));
  EXPECT_EQ(read_corpus(dir / "a.txt", text.size()).size(), 3u);
  EXPECT_EQ(read_corpus(dir / "a.txt", 0).size(), 3u);
  // The budget spans files: all of a.txt, then 7 bytes of b.txt.
  EXPECT_EQ(read_corpus(dir.str(), text.size() + 7), (std::vector<std::string>{"One.", "Two two.", "Three.", "One."}));
  gzFile gz = gzopen((dir / "a.gz").c_str(), "wb");
  gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
  gzclose(gz);
  EXPECT_EQ(read_corpus(dir / "a.gz", 17), (std::vector<std::string>{"One.", "Two two."}));
}

TEST(Corpus, MissingPathIsNamed) {
  try {
    read_corpus("/nonexistent/corpus.txt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/corpus.txt"), std::string::npos) << e.what();
  }
}

// The real dictionary, when installed: one entry per document, inner blank lines kept.
TEST(Corpus, GcideEntriesAreDocuments) {
  if (!std::filesystem::exists(kGcidePath)) GTEST_SKIP() << kGcidePath << " not installed";
  const auto docs = read_corpus("gcide", 2'000'000);
  uint64_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  EXPECT_LE(bytes, 2'000'000u);
  EXPECT_GT(bytes, 1'900'000u);
  const auto it = std::find_if(docs.begin(), docs.end(), [](const std::string& d) { return d.starts_with("Abdomen \\"); });
  ASSERT_NE(it, docs.end());
  EXPECT_NE(it->find("1. (Anat.)"), std::string::npos);
  EXPECT_NE(it->find("2. (Zool.)"), std::string::npos);
  EXPECT_EQ(it->find("Abdominal"), std::string::npos);
}

}  // namespace
}  // namespace q2::data
