#include "common/npy.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <vector>

#include "common/error.h"
#include "common/file.h"
#include "common/memory.h"

namespace q2 {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// The header's Python dict literal, parsed strictly: the keys descr, fortran_order and shape,
// each exactly once, and nothing but padding after the closing brace. A lenient search would let
// a second 'descr' or a malformed shape decide what the data means.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), text_(text) {}

  NpyHeader parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<int64_t>> shape;
    expect('{');
    while (!eat('}')) {
      const std::string key = quoted();
      expect(':');
      if (key == "descr") set(descr, key, quoted());
      else if (key == "fortran_order") set(fortran_order, key, boolean());
      else if (key == "shape") set(shape, key, tuple());
      else fail("unknown key '" + key + "'");
      if (!eat(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) fail("text after the closing brace");
    if (!descr) fail("no 'descr' key");
    if (!fortran_order) fail("no 'fortran_order' key");
    if (!shape) fail("no 'shape' key");
    return {*descr, *fortran_order, *shape};
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    constexpr size_t kShown = 200;  // a corrupt length can make the "header" the whole file
    std::string shown = text_.substr(0, kShown);
    while (!shown.empty() && is_space(shown.back())) shown.pop_back();
    throw Error("'" + path_ + "': bad .npy header: " + what + " (header " + shown +
                (text_.size() > kShown ? " ...)" : ")"));
  }

  template <typename T>
  void set(std::optional<T>& slot, const std::string& key, T value) {
    if (slot) fail("key '" + key + "' appears twice");
    slot = std::move(value);
  }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }

  std::string quoted() {
    skip_space();
    const char q = pos_ < text_.size() ? text_[pos_] : '\0';
    if (q != '\'' && q != '"') fail("expected a quoted string");
    const size_t end = text_.find(q, pos_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    const std::string s = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return s;
  }

  bool boolean() {
    skip_space();
    for (const bool v : {true, false}) {
      const std::string word = v ? "True" : "False";
      if (text_.compare(pos_, word.size(), word) == 0) {
        pos_ += word.size();
        return v;
      }
    }
    fail("fortran_order is neither True nor False");
  }

  // "()", "(5,)", "(3, 5)" or "(3, 5,)".
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    while (!eat(')')) {
      skip_space();
      const size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != ')' && !is_space(text_[pos_])) ++pos_;
      const std::string digits = text_.substr(start, pos_ - start);
      int64_t d = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
      if (digits.empty() || digits[0] == '-' || ec != std::errc() || end != digits.data() + digits.size())
        fail("dimension '" + digits + "' is not a number from 0 to " +
             std::to_string(std::numeric_limits<int64_t>::max()));
      dims.push_back(d);
      if (!eat(',')) {
        expect(')');
        break;
      }
    }
    return dims;
  }

  const std::string& path_;
  const std::string& text_;
  size_t pos_ = 0;
};

template <typename T>
bool read_pod(std::ifstream& f, T& v) {
  return static_cast<bool>(f.read(reinterpret_cast<char*>(&v), sizeof v));
}

}  // namespace

Matrix load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "'");
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) throw Error("'" + path + "': " + ec.message());
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error("'" + path + "' is not a .npy file");
  const int major = magic[6];
  uint32_t hlen = 0;
  bool length_read = false;
  if (major == 1) {
    uint16_t h16 = 0;
    length_read = read_pod(f, h16);
    hlen = h16;
  } else if (major == 2 || major == 3) {
    length_read = read_pod(f, hlen);
  } else {
    throw Error("'" + path + "': unsupported .npy version " + std::to_string(major));
  }
  const uint64_t data_offset = (major == 1 ? 10 : 12) + uint64_t{hlen};
  if (!length_read || data_offset > file_size)
    throw Error("'" + path + "': truncated .npy header (" + std::to_string(file_size) + " bytes in all)");
  std::string text(hlen, '\0');
  if (!f.read(text.data(), hlen)) throw Error("'" + path + "': truncated .npy header");
  const NpyHeader h = HeaderParser(path, text).parse();

  std::string type = h.descr;  // without its byte-order mark: '<' little-endian, '=' native, '|' none
  if (!type.empty() && (type[0] == '<' || type[0] == '=' || type[0] == '|')) type.erase(0, 1);
  if (type != "f4" && type != "f8")
    throw Error("'" + path + "': only little-endian float32/float64 arrays are supported, not descr '" + h.descr + "'");
  if (h.fortran_order) throw Error("'" + path + "': Fortran-order arrays are not supported");
  if (h.shape.size() != 2)
    throw Error("'" + path + "': expected a 2-D array, shape has " + std::to_string(h.shape.size()) + " dimension(s)");
  const bool f64 = type == "f8";
  const std::string shape =
      "'" + path + "': shape (" + std::to_string(h.shape[0]) + ", " + std::to_string(h.shape[1]) + ")";
  const int64_t n = checked_mul(h.shape[0], h.shape[1], shape);
  const uint64_t bytes = static_cast<uint64_t>(checked_mul(n, f64 ? 8 : 4, shape + " (elements x bytes each)"));
  // Against the file before anything of that size is allocated.
  const uint64_t held = file_size - data_offset;
  if (held < bytes)
    throw Error(shape + ": truncated data: needs " + std::to_string(bytes) + " bytes, the file holds " +
                std::to_string(held));
  if (held > bytes) throw Error(shape + ": " + std::to_string(held - bytes) + " bytes after the data");

  Matrix out(h.shape[0], h.shape[1]);
  if (f64) {  // in chunks, so that no float64 copy of the whole array is needed
    std::vector<double> chunk(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
    for (int64_t done = 0; done < n;) {
      const int64_t k = std::min<int64_t>(n - done, static_cast<int64_t>(chunk.size()));
      if (!f.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(k * 8)))
        throw Error("'" + path + "': read failed");
      for (int64_t i = 0; i < k; ++i) out.data[done + i] = static_cast<float>(chunk[i]);
      done += k;
    }
  } else if (!f.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(bytes))) {
    throw Error("'" + path + "': read failed");
  }
  return out;
}

void save_npy(const std::string& path, const Matrix& m) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(m.rows) + ", " +
                       std::to_string(m.cols) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // pad so data starts on a 64-byte boundary
  header += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes += '\0';
  const uint16_t hl = static_cast<uint16_t>(header.size());
  bytes.append(reinterpret_cast<const char*>(&hl), 2);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(m.data.data()), m.data.size() * sizeof(float));
  write_file_atomic(path, bytes);
}

}  // namespace q2
