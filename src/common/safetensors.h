#pragma once
// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the data. Above a
// size limit a model is split as Hugging Face does: model-0000i-of-0000n.safetensors and
// model.safetensors.index.json mapping each tensor to its file.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace q2 {

struct SafeTensor {
  std::string name;
  std::string dtype;           // "F32", "BF16", "U8", "F8_E4M3", ...
  std::vector<int64_t> shape;  // empty: a scalar
  std::string bytes;           // little-endian, row-major
};

// One file's bytes; `metadata` (string values only, as the format requires) goes under
// "__metadata__". Throws naming the tensor whose byte count disagrees with its dtype and shape.
std::string safetensors_bytes(const std::vector<SafeTensor>& tensors, const nlohmann::json& metadata);

// Writes `dir`/model.safetensors, or, when the tensors' bytes exceed `max_shard_bytes`, shards of
// at most that size (a larger tensor alone in its shard) in the given order, with the index.
// Each file is written atomically. Returns the file names written.
std::vector<std::string> write_safetensors_model(const std::string& dir, const std::vector<SafeTensor>& tensors,
                                                 const nlohmann::json& metadata, uint64_t max_shard_bytes);

}  // namespace q2
