#include "common/safetensors.h"

#include <cstdio>
#include <map>

#include "common/error.h"
#include "common/file.h"

namespace q2 {

namespace {

size_t dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {{"F64", 8}, {"F32", 4}, {"BF16", 2}, {"F16", 2},
                                                      {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}};
  const auto it = sizes.find(dtype);
  if (it == sizes.end()) throw Error("safetensors: unsupported dtype '" + dtype + "'");
  return it->second;
}

size_t expected_bytes(const SafeTensor& t) {
  size_t n = dtype_size(t.dtype);
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  return n;
}

std::string file_bytes(const std::vector<const SafeTensor*>& tensors, const nlohmann::json& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const SafeTensor* tp : tensors) {
    const SafeTensor& t = *tp;
    if (t.bytes.size() != expected_bytes(t))
      throw Error("safetensors: tensor '" + t.name + "' holds " + std::to_string(t.bytes.size()) + " bytes, its " +
                  t.dtype + " shape needs " + std::to_string(expected_bytes(t)));
    if (header.contains(t.name)) throw Error("safetensors: tensor '" + t.name + "' given twice");
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out;
  out.reserve(8 + text.size() + offset);
  const uint64_t length = text.size();
  out.append(reinterpret_cast<const char*>(&length), 8);
  out += text;
  for (const SafeTensor* t : tensors) out += t->bytes;
  return out;
}

}  // namespace

std::string safetensors_bytes(const std::vector<SafeTensor>& tensors, const nlohmann::json& metadata) {
  std::vector<const SafeTensor*> all;
  for (const SafeTensor& t : tensors) all.push_back(&t);
  return file_bytes(all, metadata);
}

std::vector<std::string> write_safetensors_model(const std::string& dir, const std::vector<SafeTensor>& tensors,
                                                 const nlohmann::json& metadata, uint64_t max_shard_bytes) {
  std::vector<std::vector<const SafeTensor*>> shards(1);
  uint64_t total = 0, in_shard = 0;
  for (const SafeTensor& t : tensors) {
    if (in_shard > 0 && in_shard + t.bytes.size() > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.bytes.size();
    total += t.bytes.size();
  }
  auto write = [&](const std::string& name, const std::vector<const SafeTensor*>& list) {
    write_file_atomic(dir + "/" + name, file_bytes(list, metadata));
  };
  if (shards.size() == 1) {
    write("model.safetensors", shards[0]);
    return {"model.safetensors"};
  }
  std::vector<std::string> names;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write(name, shards[i]);
    for (const SafeTensor* t : shards[i]) weight_map[t->name] = name;
    names.push_back(name);
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  names.push_back("model.safetensors.index.json");
  return names;
}

}  // namespace q2
