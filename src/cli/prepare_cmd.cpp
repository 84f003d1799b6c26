#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "data/dataset.h"

namespace q2::cli {

namespace {

void run(const data::PrepareOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const data::DatasetMeta m = data::prepare(o, [&](const std::string& line) {
    std::fprintf(stderr, "[prepare %6.1fs] %s\n", elapsed(), line.c_str());
  });
  std::printf("prepared %s in %.1f s\n", o.out.c_str(), elapsed());
  std::printf("  vocab        %u (%s)\n", m.vocab_size, m.tokenizer.c_str());
  std::printf("  train        %llu tokens, %llu bytes, %zu shard(s): %s%s\n",
              static_cast<unsigned long long>(m.train_tokens), static_cast<unsigned long long>(m.train_bytes),
              m.train_shards.size(), m.train_shards.front().c_str(), m.train_shards.size() > 1 ? " ..." : "");
  std::printf("  val          %llu tokens, %llu bytes: %s\n", static_cast<unsigned long long>(m.val_tokens),
              static_cast<unsigned long long>(m.val_bytes), m.val_shard.c_str());
  std::printf("  bytes/token  %.4f\n", m.bytes_per_token);
}

}  // namespace

void add_prepare(CLI::App& app) {
  auto o = std::make_shared<data::PrepareOptions>();
  CLI::App* sub = app.add_subcommand("prepare", "Train a tokenizer and write token shards from a text corpus");
  sub->add_option("--corpus", o->corpus, "gcide (Debian's dict-gcide) or a text file, .gz/.zst file or directory; several separated by commas")
      ->capture_default_str();
  sub->add_option("--vocab", o->vocab, "Tokenizer vocabulary size")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--out", o->out, "Directory to write")->required();
  sub->add_option("--val-fraction", o->val_fraction, "Fraction of documents held out for validation")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub->add_option("--max-bytes", o->max_bytes, "Read at most this many bytes of text (0: all)")->capture_default_str();
  sub->add_option("--tokenizer", o->tokenizer, "Use this SentencePiece model instead of training one (--vocab is then ignored)")
      ->check(CLI::ExistingFile);
  sub->callback([o] { run(*o); });
}

}  // namespace q2::cli
