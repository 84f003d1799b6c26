#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "common/error.h"

// Defined in libsentencepiece but absent from its installed headers; silences its INFO logging.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace q2::data {

namespace {

constexpr const char* kMeta = "\xE2\x96\x81";  // "▁", SentencePiece's space symbol

}  // namespace

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::vector<uint32_t> byte_lengths;
};

void train_tokenizer(const std::string& text_file, uint32_t vocab_size, const std::string& model_path) {
  if (!std::filesystem::exists(text_file)) throw Error("tokenizer training text '" + text_file + "': not found");
  if (vocab_size < 260)  // SentencePiece's own message for this is an internal assertion
    throw Error("a vocabulary of " + std::to_string(vocab_size) +
                " tokens is too small: 259 ids are reserved (<unk>, <s>, \"\\n\" and 256 byte tokens); use 260 or more");
  const std::string suffix = ".model";
  if (model_path.size() <= suffix.size() || model_path.compare(model_path.size() - suffix.size(), suffix.size(), suffix) != 0)
    throw Error("tokenizer model path '" + model_path + "' must end in .model");
  const std::string prefix = model_path.substr(0, model_path.size() - suffix.size());
  sentencepiece::logging::SetMinLogLevel(2);
  const std::unordered_map<std::string, std::string> args = {
      {"input", text_file},
      {"model_prefix", prefix},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      // A random sample bounds the time and memory of training on any corpus size.
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(std::max(1u, std::thread::hardware_concurrency()))},
      // Exact text: no NFKC, keep runs of spaces (indentation) and learn pieces made of them.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      // Training sees lines, so "\n" could never be learned; a fixed symbol keeps it one token.
      {"user_defined_symbols", "\n"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
  };
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) throw Error("training tokenizer on '" + text_file + "': " + status.ToString());
  std::error_code ec;
  std::filesystem::remove(prefix + ".vocab", ec);  // SentencePiece's listing of the pieces; the model has them
}

Tokenizer Tokenizer::load(const std::string& model_path) {
  auto impl = std::make_shared<Impl>();
  const auto status = impl->sp.Load(model_path);
  if (!status.ok()) throw Error("tokenizer model '" + model_path + "': " + status.ToString());
  const int n = impl->sp.GetPieceSize();
  impl->byte_lengths.resize(n);
  for (int id = 0; id < n; ++id) {
    if (impl->sp.IsControl(id) || impl->sp.IsUnknown(id) || impl->sp.IsUnused(id)) continue;
    if (impl->sp.IsByte(id)) {
      impl->byte_lengths[id] = 1;
      continue;
    }
    // Each 3-byte "▁" decodes to a single space.
    const std::string& piece = impl->sp.IdToPiece(id);
    uint32_t len = static_cast<uint32_t>(piece.size());
    for (size_t i = piece.find(kMeta); i != std::string::npos; i = piece.find(kMeta, i + 3)) len -= 2;
    impl->byte_lengths[id] = len;
  }
  return Tokenizer(std::move(impl));
}

std::vector<uint32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) throw Error("tokenizer encode: " + status.ToString());
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::string text;
  const auto status = impl_->sp.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) throw Error("tokenizer decode: " + status.ToString());
  return text;
}

uint32_t Tokenizer::vocab_size() const { return static_cast<uint32_t>(impl_->sp.GetPieceSize()); }
uint32_t Tokenizer::bos_id() const { return static_cast<uint32_t>(impl_->sp.bos_id()); }
const std::vector<uint32_t>& Tokenizer::byte_lengths() const { return impl_->byte_lengths; }

}  // namespace q2::data
