// Writes the generated seed files of the fuzz corpora with the program's own writers:
//   make_seeds FUZZ_DIR    (FUZZ_DIR: this folder; build it in the build-fuzz tree)
// corpus/npy/valid_*.npy, corpus/shard/*.bin, corpus/checkpoint/*.bin, corpus/config/all_keys.toml,
// corpus/dataset_meta/meta.json and the dataset beside it, data/dataset/. The hand-written edge
// cases in corpus/ stay as they are. Output is deterministic.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/npy.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "linear/scheme.h"
#include "model/backend.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;
using namespace q2;

namespace {

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// The smallest model the config validation allows, nearly: 1 layer, width 16, vocab 4.
model::ModelConfig micro() {
  model::ModelConfig c;
  c.preset = "micro";
  c.n_layers = 1;
  c.d_model = 16;
  c.n_heads = 2;
  c.d_ff = 16;
  c.vocab = 4;
  c.seq_len = 8;
  return c;
}

void checkpoints(const fs::path& out) {
  const auto backend = model::make_cpu_backend();
  for (const bool with_opt : {false, true}) {
    train::TrainConfig cfg;
    cfg.scheme = with_opt ? "quartet2" : "bf16";
    cfg.seq_len = 8;
    model::Transformer m(micro(), linear::scheme_by_name(cfg.scheme, cfg.hadamard), *backend);
    m.init(1);
    train::AdamW opt(*backend, m.params());
    const fs::path p = out / (with_opt ? "micro_adamw.bin" : "micro.bin");
    train::save_checkpoint(p.string(), cfg, m, with_opt ? &opt : nullptr, 3, {{"position", 17}});
  }
}

void npys(const fs::path& out) {
  Matrix m(2, 3);
  for (int i = 0; i < 6; ++i) m.data[i] = 0.5f * static_cast<float>(i) - 1.0f;
  save_npy((out / "valid_f4.npy").string(), m);
  // float64, written the way numpy.save writes it (version 1.0, header padded to 64 bytes).
  std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1), }";
  h.append(63 - (10 + h.size()) % 64, ' ');
  h += '\n';
  std::string b = std::string("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(h.size());
  b.append(reinterpret_cast<const char*>(&hl), 2);
  b += h;
  for (double v : {1.0, -2.5, 1e-3}) b.append(reinterpret_cast<const char*>(&v), 8);
  write(out / "valid_f8.npy", b);
}

void shards(const fs::path& out) {
  std::vector<uint32_t> t16, t32;
  for (uint32_t i = 0; i < 24; ++i) t16.push_back((i * 37) % 300);
  for (uint32_t i = 0; i < 12; ++i) t32.push_back((i * 7919) % 70000);
  data::write_shard((out / "u16.bin").string(), t16, 300);
  data::write_shard((out / "u32.bin").string(), t32, 70000);
  data::write_shard((out / "empty.bin").string(), {}, 2);
}

// Every key of every section, at its default.
void config(const fs::path& out) {
  std::string toml = "# every key at its default (written by fuzz/make_seeds.cpp)\n";
  const nlohmann::json defaults = train::to_json(train::TrainConfig{});
  for (const auto& [section, keys] : defaults.items()) {
    toml += "[" + section + "]\n";
    for (const auto& [key, v] : keys.items()) toml += key + " = " + v.dump() + "\n";
  }
  write(out / "all_keys.toml", toml);
}

// A prepared dataset of a small generated corpus: two train shards and val.bin.
void dataset(const fs::path& corpus_out, const fs::path& data_out) {
  const fs::path tmp = fs::temp_directory_path() / "q2-make-seeds";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  static const char* const kWords[] = {"the",   "of",    "a",     "to",    "in",   "is",   "that",  "which",
                                       "act",   "state", "being", "water", "light", "stone", "horse", "plant",
                                       "small", "large", "used",  "Latin", "Greek", "noun",  "verb",  "see"};
  uint64_t s = 88172645463325252ull;
  auto rnd = [&](uint64_t n) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s % n;
  };
  std::string text;
  for (int d = 0; d < 120; ++d) {
    const uint64_t words = 4 + rnd(10);
    for (uint64_t w = 0; w < words; ++w) text += std::string(w ? " " : "") + kWords[rnd(std::size(kWords))];
    text += ".\n\n";
  }
  write(tmp / "corpus.txt", text);
  const fs::path cwd = fs::current_path();
  fs::current_path(tmp);  // relative names, so meta.json's provenance does not name this machine
  data::PrepareOptions o;
  o.corpus = "corpus.txt";
  o.vocab = 320;
  o.out = "data";
  o.val_fraction = 0.1;
  o.shard_tokens = 1500;
  data::prepare(o, [](const std::string& line) { std::printf("prepare: %s\n", line.c_str()); });
  fs::current_path(cwd);
  fs::remove_all(data_out);
  fs::create_directories(data_out);
  for (const auto& e : fs::directory_iterator(tmp / "data")) {
    if (e.path().filename() == "meta.json") fs::copy_file(e.path(), corpus_out / "meta.json", fs::copy_options::overwrite_existing);
    else fs::copy_file(e.path(), data_out / e.path().filename());
  }
  fs::remove_all(tmp);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds FUZZ_DIR\n");
    return 2;
  }
  const fs::path dir = fs::absolute(argv[1]);
  try {
    for (const char* c : {"npy", "shard", "checkpoint", "config", "dataset_meta"}) fs::create_directories(dir / "corpus" / c);
    npys(dir / "corpus/npy");
    shards(dir / "corpus/shard");
    checkpoints(dir / "corpus/checkpoint");
    config(dir / "corpus/config");
    dataset(dir / "corpus/dataset_meta", dir / "data/dataset");
  } catch (const Error& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
