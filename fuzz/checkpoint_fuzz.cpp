// Checkpoints (src/train/checkpoint.cpp): read_checkpoint_info on arbitrary bytes, then, as
// load_for_inference and --resume do, load_checkpoint into a model built from the
// checkpoint's own header (with and without optimizer state: AdamW's or Muon's).
//
// Each input runs twice: as it is, and with its last four bytes replaced by the CRC-32 of the
// rest, so that mutations of the header and the body get past the checksum.
#include <zlib.h>

#include <cstring>
#include <memory>

#include "common/error.h"
#include "fuzz_util.h"
#include "linear/scheme.h"
#include "model/backend.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace {

// Models above this many float32 parameters are skipped, not allocated: a fuzzed header can
// ask for any size, and the loader's job is to reject a body of the wrong size, not to cap it.
constexpr double kMaxParams = 1 << 18;

double param_count(const q2::model::ModelConfig& c) {  // in double: fuzzed sizes overflow int64
  const double d = static_cast<double>(c.d_model), h = static_cast<double>(c.d_ff);
  const double per_layer = 4 * d * d + 3 * d * h + 2 * d;
  return static_cast<double>(c.n_layers) * per_layer + d + 2 * static_cast<double>(c.vocab) * d;
}

void load(const std::string& path) {
  static const std::unique_ptr<q2::model::Backend> backend = q2::model::make_cpu_backend();
  try {
    const q2::train::CheckpointInfo info = q2::train::read_checkpoint_info(path);
    if (!(param_count(info.model) <= kMaxParams) || info.model.n_layers > 64) return;
    const q2::linear::Scheme scheme = q2::linear::scheme_by_name(info.config.scheme, info.config.hadamard);
    q2::model::Transformer model(info.model, scheme, *backend);
    q2::train::load_checkpoint(path, model, nullptr, nullptr);  // inference
    // The optimizer its config names (AdamW or Muon), as --resume builds it.
    const auto opt = q2::train::make_optimizer(info.config, *backend, model.params(), model.config());
    q2::train::load_checkpoint(path, model, opt.get(), &info.config);  // resume
  } catch (const q2::Error& e) {
    q2::fuzz::rejected(e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  load(q2::fuzz::write_input("checkpoint.bin", data, size));
  if (size < 4) return 0;
  std::string fixed(reinterpret_cast<const char*>(data), size);
  const uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data), static_cast<uInt>(size - 4)));
  if (std::memcmp(fixed.data() + size - 4, &crc, 4) == 0) return 0;  // already checked as it is
  std::memcpy(fixed.data() + size - 4, &crc, 4);
  load(q2::fuzz::write_input("checkpoint.bin", fixed));
  return 0;
}
