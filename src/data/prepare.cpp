#include <omp.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file.h"
#include "data/corpus.h"
#include "quant/philox.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace q2::data {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kShuffleSeed = 0x5155415254455432ull;  // "QUARTET2"

constexpr const char* kFormat = "quartet2-dataset";
constexpr int kVersion = 1;
constexpr size_t kEncodeChunk = 8192;  // documents encoded in parallel between progress checks

std::string format(const char* fmt, auto... args) {
  std::string s(static_cast<size_t>(std::snprintf(nullptr, 0, fmt, args...)), '\0');
  std::snprintf(s.data(), s.size() + 1, fmt, args...);
  return s;
}

// FNV-1a then the splitmix64 finalizer: a fixed, platform-independent hash of the text.
double unit_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

std::string shard_name(size_t k) { return format("train_%03zu.bin", k); }

class Timer {
 public:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

void check_options(const PrepareOptions& o) {
  if (o.out.empty()) throw Error("prepare: --out is required");
  if (!(o.val_fraction > 0 && o.val_fraction < 1))
    throw Error(format("prepare: --val-fraction must be in (0, 1), got %g", o.val_fraction));
  if (o.shard_tokens == 0) throw Error("prepare: shard_tokens must be positive");
}

// Appends documents to the training shards, writing one whenever shard_tokens are buffered.
struct TrainWriter {
  std::string dir;
  uint64_t shard_tokens;
  uint32_t vocab;
  std::vector<uint32_t> buffer;
  std::vector<std::string> names;

  void add(const std::vector<uint32_t>& doc) {
    buffer.insert(buffer.end(), doc.begin(), doc.end());
    while (buffer.size() >= shard_tokens) {
      write(std::vector<uint32_t>(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(shard_tokens)));
      buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(shard_tokens));
    }
  }
  void finish() {
    if (!buffer.empty()) write(buffer);
    buffer.clear();
  }
  void write(const std::vector<uint32_t>& tokens) {
    names.push_back(shard_name(names.size()));
    write_shard(dir + "/" + names.back(), tokens, vocab);
  }
};

}  // namespace

DatasetMeta prepare(const PrepareOptions& opts, const std::function<void(const std::string&)>& progress) {
  check_options(opts);
  const std::string dir = opts.out;
  std::error_code mkdir_error;
  fs::create_directories(dir, mkdir_error);
  if (mkdir_error) throw Error("prepare: cannot create '" + dir + "': " + mkdir_error.message());

  Timer t;
  std::vector<std::string> docs = read_corpus(opts.corpus, opts.max_bytes);
  if (docs.empty()) throw Error("prepare: corpus '" + opts.corpus + "' holds no text");
  // A fixed pseudo-random document order (Fisher-Yates on Philox words): the loader streams
  // the shards in order, so without it training would walk a corpus list, or a dictionary,
  // from first to last document, a curriculum that the validation split does not share.
  for (size_t i = docs.size() - 1; i > 0; --i)
    std::swap(docs[i], docs[philox::word(kShuffleSeed, philox::kData, i) % (i + 1)]);
  uint64_t corpus_bytes = 0;
  for (const auto& d : docs) corpus_bytes += d.size();
  progress(format("read %zu documents, %.1f MB, from '%s' in %.1f s", docs.size(), corpus_bytes / 1e6,
                  opts.corpus.c_str(), t.seconds()));

  std::vector<char> is_val(docs.size());
  size_t n_val = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    is_val[i] = unit_hash(docs[i]) < opts.val_fraction;
    n_val += is_val[i];
  }
  if (n_val == 0 || n_val == docs.size())
    throw Error(format("prepare: %zu of %zu documents fell into the validation split; use a larger corpus or "
                       "another --val-fraction",
                       n_val, docs.size()));

  // The tokenizer learns from the training documents only (unless one is given).
  t = Timer();
  const std::string model = dir + "/tokenizer.model";
  if (!opts.tokenizer.empty()) {
    std::error_code ec;
    if (fs::absolute(opts.tokenizer) != fs::absolute(model))
      fs::copy_file(opts.tokenizer, model, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error("prepare: cannot copy the tokenizer '" + opts.tokenizer + "': " + ec.message());
  } else {
    // Removed on the way out, whether training succeeds or not.
    struct TempFile {
      std::string path;
      ~TempFile() {
        std::error_code ec;
        fs::remove(path, ec);
      }
    } text{dir + "/tokenizer_train.txt"};
    std::ofstream f(text.path, std::ios::binary);
    for (size_t i = 0; i < docs.size(); ++i)
      if (!is_val[i]) f << docs[i] << '\n';
    if (!f.flush()) throw Error("prepare: cannot write '" + text.path + "'");
    f.close();
    progress(format("training a %u-token BPE tokenizer on %zu documents...", opts.vocab, docs.size() - n_val));
    train_tokenizer(text.path, opts.vocab, model);
  }
  const Tokenizer tok = Tokenizer::load(model);
  progress(format("%s tokenizer '%s' (%u tokens) in %.1f s", opts.tokenizer.empty() ? "trained" : "copied",
                  model.c_str(), tok.vocab_size(), t.seconds()));

  t = Timer();
  TrainWriter train{dir, opts.shard_tokens, tok.vocab_size(), {}, {}};
  std::vector<uint32_t> val;
  uint64_t train_tokens = 0, train_bytes = 0, val_bytes = 0;
  const auto& lengths = tok.byte_lengths();
  double last_report = 0;
  for (size_t begin = 0; begin < docs.size(); begin += kEncodeChunk) {
    const size_t end = std::min(docs.size(), begin + kEncodeChunk);
    std::vector<std::vector<uint32_t>> encoded(end - begin);
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = begin; i < end; ++i) {
      try {
        encoded[i - begin] = tok.encode(docs[i]);
      } catch (...) {
#pragma omp critical
        failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    // Appended in document order, so the output does not depend on the thread count.
    for (size_t i = begin; i < end; ++i) {
      std::vector<uint32_t>& ids = encoded[i - begin];
      ids.insert(ids.begin(), tok.bos_id());
      uint64_t bytes = 0;
      for (const uint32_t id : ids) bytes += lengths[id];
      if (is_val[i]) {
        val.insert(val.end(), ids.begin(), ids.end());
        val_bytes += bytes;
      } else {
        train.add(ids);
        train_tokens += ids.size();
        train_bytes += bytes;
      }
    }
    if (t.seconds() - last_report >= 10 && end < docs.size()) {
      last_report = t.seconds();
      progress(format("encoded %zu of %zu documents (%.0f%%) in %.1f s", end, docs.size(), 100.0 * end / docs.size(),
                      t.seconds()));
    }
  }
  progress(format("encoded %zu documents on %d thread(s) in %.1f s", docs.size(), omp_get_max_threads(), t.seconds()));

  t = Timer();
  train.finish();
  write_shard(dir + "/val.bin", val, tok.vocab_size());
  const double bytes_per_token =
      static_cast<double>(train_bytes + val_bytes) / static_cast<double>(train_tokens + val.size());
  const nlohmann::json j = {
      {"format", kFormat},
      {"version", kVersion},
      {"vocab_size", tok.vocab_size()},
      {"tokenizer", "tokenizer.model"},
      {"train_shards", train.names},
      {"val_shard", "val.bin"},
      {"train_tokens", train_tokens},
      {"val_tokens", val.size()},
      {"train_bytes", train_bytes},
      {"val_bytes", val_bytes},
      {"bytes_per_token", bytes_per_token},
      {"train_documents", docs.size() - n_val},
      {"val_documents", n_val},
      {"corpus", opts.corpus},
      {"max_bytes", opts.max_bytes},
      {"val_fraction", opts.val_fraction},
  };
  write_file_atomic(dir + "/meta.json", j.dump(2) + "\n");
  progress(format("wrote %zu train shard(s), val.bin and meta.json in %.1f s", train.names.size(), t.seconds()));
  return load_dataset(dir);
}

DatasetMeta load_dataset(const std::string& dir) {
  const fs::path root = fs::absolute(dir);
  const std::string path = (root / "meta.json").string();
  std::ifstream in(path);
  if (!in) throw Error("dataset '" + dir + "': no meta.json (make one with `quartet2 prepare --out " + dir + "`)");
  DatasetMeta m;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.at("format") != kFormat) throw Error("dataset '" + path + "': not a quartet2 dataset");
    if (j.at("version") != kVersion)
      throw Error("dataset '" + path + "': unsupported version " + j.at("version").dump());
    // get<> would cast a float or a negative number as it is (undefined, or wrapping).
    auto count = [&](const char* key, uint64_t max) -> uint64_t {
      const nlohmann::json& v = j.at(key);
      if (!v.is_number_unsigned() || v.get<uint64_t>() > max)
        throw Error("dataset '" + path + "': " + key + " must be a whole number from 0 to " + std::to_string(max) +
                    ", got " + v.dump());
      return v.get<uint64_t>();
    };
    m.vocab_size = static_cast<uint32_t>(count("vocab_size", UINT32_MAX));
    m.tokenizer = (root / j.at("tokenizer").get<std::string>()).string();
    for (const auto& s : j.at("train_shards")) m.train_shards.push_back((root / s.get<std::string>()).string());
    m.val_shard = (root / j.at("val_shard").get<std::string>()).string();
    m.train_tokens = count("train_tokens", UINT64_MAX);
    m.val_tokens = count("val_tokens", UINT64_MAX);
    m.train_bytes = count("train_bytes", UINT64_MAX);
    m.val_bytes = count("val_bytes", UINT64_MAX);
    m.bytes_per_token = j.at("bytes_per_token").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("dataset '" + path + "': corrupt: " + e.what());
  }
  if (!fs::exists(m.tokenizer)) throw Error("dataset '" + path + "': tokenizer '" + m.tokenizer + "' is missing");
  // Another tokenizer would decode the shards into other text (and bits per byte with it).
  const uint32_t tokenizer_vocab = Tokenizer::load(m.tokenizer).vocab_size();
  if (tokenizer_vocab != m.vocab_size)
    throw Error(format("dataset '%s': vocab_size is %u, but tokenizer '%s' has %u tokens", path.c_str(), m.vocab_size,
                       m.tokenizer.c_str(), tokenizer_vocab));
  auto check = [&](const std::vector<std::string>& shards, uint64_t expected, const char* split) {
    uint64_t total = 0;
    for (const auto& s : shards) {
      const ShardInfo info = read_shard_info(s);
      if (info.vocab_size != m.vocab_size)
        throw Error(format("dataset '%s': shard '%s' has vocab_size %u, the dataset %u", path.c_str(), s.c_str(),
                           info.vocab_size, m.vocab_size));
      total += info.token_count;
    }
    if (total != expected)
      throw Error(format("dataset '%s': %s shards hold %llu tokens, meta.json says %llu", path.c_str(), split,
                         static_cast<unsigned long long>(total), static_cast<unsigned long long>(expected)));
  };
  check(m.train_shards, m.train_tokens, "train");
  check({m.val_shard}, m.val_tokens, "val");
  return m;
}

}  // namespace q2::data
