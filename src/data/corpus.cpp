#include "data/corpus.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "common/error.h"

namespace q2::data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kChunk = 1 << 20;

struct FileText {
  std::string text;
  bool complete = true;  // false when reading stopped at the byte limit
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The decompressors below overshoot by up to a chunk; this cuts the text back to `limit`.
void cut(FileText& f, uint64_t limit) {
  if (limit > 0 && f.text.size() > limit) {
    f.text.resize(limit);
    f.complete = false;
  }
}

// limit > 0: at most `limit` bytes of text.
FileText read_gzip(const std::string& path, uint64_t limit) {
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> gz(gzopen(path.c_str(), "rb"), gzclose);
  if (!gz) throw Error("corpus file '" + path + "': cannot open");
  // zlib would pass anything else through as raw bytes ("transparent" reading).
  if (gzdirect(gz.get())) throw Error("corpus file '" + path + "': not gzip data");
  FileText out;
  std::string buf(kChunk, '\0');
  int code = Z_OK;
  while (limit == 0 || out.text.size() <= limit) {
    const int n = gzread(gz.get(), buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) throw Error("corpus file '" + path + "': gzip error: " + gzerror(gz.get(), &code));
    if (n == 0) break;
    out.text.append(buf.data(), static_cast<size_t>(n));
  }
  // A stream cut short is not a read error to gzread: it returns what it could decode and
  // records Z_BUF_ERROR ("unexpected end of file").
  const char* message = gzerror(gz.get(), &code);
  if (code == Z_BUF_ERROR) throw Error("corpus file '" + path + "': truncated gzip stream (" + message + ")");
  cut(out, limit);
  return out;
}

FileText read_zstd(const std::string& path, uint64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("corpus file '" + path + "': cannot open");
  const std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds(ZSTD_createDStream(), ZSTD_freeDStream);
  std::string inbuf(ZSTD_DStreamInSize(), '\0'), outbuf(ZSTD_DStreamOutSize(), '\0');
  FileText out;
  size_t last = 0;  // 0 once a frame is complete
  while (in) {
    in.read(inbuf.data(), static_cast<std::streamsize>(inbuf.size()));
    ZSTD_inBuffer input{inbuf.data(), static_cast<size_t>(in.gcount()), 0};
    while (input.pos < input.size) {
      ZSTD_outBuffer output{outbuf.data(), outbuf.size(), 0};
      last = ZSTD_decompressStream(ds.get(), &output, &input);
      if (ZSTD_isError(last)) throw Error("corpus file '" + path + "': zstd error: " + ZSTD_getErrorName(last));
      out.text.append(outbuf.data(), output.pos);
      if (limit > 0 && out.text.size() > limit) {
        cut(out, limit);
        return out;
      }
    }
  }
  if (last != 0) throw Error("corpus file '" + path + "': truncated zstd stream");
  return out;
}

FileText read_plain(const std::string& path, uint64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("corpus file '" + path + "': cannot open");
  const uint64_t size = fs::file_size(path);
  const uint64_t n = limit > 0 ? std::min(size, limit) : size;
  FileText out;
  out.text.resize(n);
  if (!in.read(out.text.data(), static_cast<std::streamsize>(n))) throw Error("corpus file '" + path + "': read failed");
  out.complete = n == size;
  return out;
}

FileText read_any(const std::string& path, uint64_t limit) {
  if (ends_with(path, ".gz") || ends_with(path, ".dz")) return read_gzip(path, limit);
  if (ends_with(path, ".zst")) return read_zstd(path, limit);
  return read_plain(path, limit);
}

constexpr const char* kSpace = " \t\r\f\v";

bool is_blank(std::string_view line) { return line.find_first_not_of(kSpace) == std::string_view::npos; }

// Windows-1252 for 0x80-0x9F (its five unassigned bytes keep their Latin-1 code points); the
// rest of 0xA0-0xFF is Latin-1.
constexpr char16_t kCp1252[32] = {0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                  0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
                                  0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                  0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the valid UTF-8 sequence at s[i], or 0.
size_t utf8_length(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

void check_exists(const std::string& path) {
  if (!fs::exists(path)) throw Error("corpus '" + path + "': no such file or directory");
}

}  // namespace

std::string to_valid_utf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = utf8_length(bytes, i);
    if (n > 0) {
      out.append(bytes, i, n);
      i += n;
    } else {
      const auto c = static_cast<unsigned char>(bytes[i++]);
      append_utf8(out, c < 0xA0 ? kCp1252[c - 0x80] : c);
    }
  }
  return out;
}

std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> docs;
  std::string doc, blanks;  // blank lines seen since the document's last line
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    if (is_blank(line)) {
      blanks.append(line).push_back('\n');
      continue;
    }
    if (!doc.empty() && !blanks.empty() && std::strchr(kSpace, line.front()) == nullptr) {
      docs.push_back(std::move(doc));
      doc.clear();
    } else if (!doc.empty()) {
      doc.push_back('\n');
      doc += blanks;
    }
    blanks.clear();
    doc.append(line);
  }
  if (!doc.empty()) docs.push_back(std::move(doc));
  return docs;
}

namespace {

// One corpus (gcide, a file or a directory); *read receives the bytes of text read.
std::vector<std::string> read_single(const std::string& spec, uint64_t max_bytes, uint64_t* read) try {
  std::vector<std::string> files;
  bool from_directory = false;
  if (spec == "gcide") {
    if (!fs::exists(kGcidePath))
      throw Error(std::string("corpus 'gcide': ") + kGcidePath + " not found; install it with `apt-get install dict-gcide`");
    files.push_back(kGcidePath);
  } else {
    check_exists(spec);
    if (fs::is_directory(spec)) {
      from_directory = true;
      for (const auto& e : fs::recursive_directory_iterator(spec))
        if (e.is_regular_file()) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(spec);
    }
  }

  std::vector<std::string> docs;
  uint64_t total = 0;  // bytes of text read
  for (const auto& path : files) {
    if (max_bytes > 0 && total >= max_bytes) break;
    FileText f = read_any(path, max_bytes > 0 ? max_bytes - total : 0);
    total += f.text.size();
    if (std::memchr(f.text.data(), '\0', f.text.size()) != nullptr) {
      if (from_directory) continue;
      throw Error("corpus file '" + path + "': holds NUL bytes, so it is not text");
    }
    std::vector<std::string> file_docs = split_documents(to_valid_utf8(f.text));
    if (!f.complete && !file_docs.empty()) file_docs.pop_back();  // may be cut short
    for (auto& d : file_docs) docs.push_back(std::move(d));
    if (!f.complete) break;
  }
  *read = total;
  return docs;
} catch (const fs::filesystem_error& e) {
  throw Error("corpus '" + spec + "': " + e.what());
}

}  // namespace

std::vector<std::string> read_corpus(const std::string& spec, uint64_t max_bytes) {
  std::vector<std::string> docs;
  uint64_t total = 0;
  for (size_t start = 0; start <= spec.size();) {  // comma-separated corpora, in order
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string part = spec.substr(start, comma - start);
    start = comma + 1;
    if (part.empty()) throw Error("corpus list '" + spec + "' has an empty entry");
    if (max_bytes > 0 && total >= max_bytes) break;
    uint64_t read = 0;
    for (auto& d : read_single(part, max_bytes > 0 ? max_bytes - total : 0, &read)) docs.push_back(std::move(d));
    total += read;
  }
  return docs;
}

}  // namespace q2::data
