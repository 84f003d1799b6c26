#include "train/checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/crc32.h"
#include "common/error.h"
#include "common/file.h"
#include "model/collectives.h"

namespace q2::train {

namespace {

constexpr uint32_t kMagic = 0x4B433251;  // "Q2CK"
constexpr uint32_t kVersion = 1;

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_matrix(std::string& out, const Matrix& m) {
  out.append(reinterpret_cast<const char*>(m.data.data()), m.data.size() * sizeof(float));
}

// The whole file, verified; `body` is positioned after the header.
struct Verified {
  std::string bytes;
  nlohmann::json header;
  size_t body = 0;
};

Verified read_verified(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error("checkpoint '" + path + "' is a folder; pass the checkpoint file in it (e.g. '" + path +
                "/checkpoint.bin')");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open checkpoint '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  Verified v;
  v.bytes = ss.str();
  const std::string& b = v.bytes;
  if (b.size() < 20) throw Error("checkpoint '" + path + "' is truncated (" + std::to_string(b.size()) + " bytes)");
  uint32_t magic, version, stored;
  uint64_t hlen;
  std::memcpy(&magic, b.data(), 4);
  std::memcpy(&version, b.data() + 4, 4);
  std::memcpy(&hlen, b.data() + 8, 8);
  if (magic != kMagic) throw Error("'" + path + "' is not a quartet2 checkpoint (wrong magic)");
  if (version != kVersion)
    throw Error("checkpoint '" + path + "' has format version " + std::to_string(version) + "; this build reads " +
                std::to_string(kVersion));
  std::memcpy(&stored, b.data() + b.size() - 4, 4);
  if (crc32_of(b.data(), b.size() - 4) != stored)
    throw Error("checkpoint '" + path + "' is corrupt or truncated (checksum mismatch)");
  if (hlen > b.size() - 20) throw Error("checkpoint '" + path + "' is truncated (header)");
  try {
    v.header = nlohmann::json::parse(b.substr(16, hlen));
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint '" + path + "': unreadable header: " + e.what());
  }
  v.body = 16 + hlen;
  return v;
}

nlohmann::json param_list(model::Transformer& model) {
  nlohmann::json params = nlohmann::json::array();
  for (const model::Param& p : model.params()) params.push_back({p.name, p.value.rows, p.value.cols});
  return params;
}

nlohmann::json state_list(const std::vector<OptimizerState>& state) {
  nlohmann::json list = nlohmann::json::array();
  for (const OptimizerState& s : state) list.push_back({s.name, s.rows, s.cols});
  return list;
}

// The state list of a checkpoint written before Muon (AdamW: every m, then every v).
nlohmann::json legacy_state_list(const nlohmann::json& params) {
  nlohmann::json list = nlohmann::json::array();
  for (const char* kind : {":adamw.m", ":adamw.v"})
    for (const nlohmann::json& p : params) list.push_back({p.at(0).get<std::string>() + kind, p.at(1), p.at(2)});
  return list;
}

// The float32 values of a state list, or an Error for a malformed one.
uint64_t state_floats(const nlohmann::json& list, const std::string& path) {
  auto bad = [&] { return Error("checkpoint '" + path + "': malformed header: optimizer_state " + list.dump()); };
  if (!list.is_array()) throw bad();
  uint64_t n = 0;
  for (const nlohmann::json& e : list) {
    if (!e.is_array() || e.size() != 3 || !e[0].is_string() || !e[1].is_number_unsigned() || !e[2].is_number_unsigned())
      throw bad();
    uint64_t size = 0;
    if (__builtin_mul_overflow(e[1].get<uint64_t>(), e[2].get<uint64_t>(), &size) || __builtin_add_overflow(n, size, &n))
      throw bad();
  }
  return n;
}

CheckpointInfo info_of(const nlohmann::json& h, const std::string& path) {
  CheckpointInfo i;
  try {
    i.header = h;
    if (!h.at("step").is_number_integer() || h["step"].get<int64_t>() < 0)
      throw Error("checkpoint '" + path + "': malformed header: step " + h["step"].dump());
    i.step = h["step"].get<int64_t>();
    i.config = from_json(h.at("config"));
    i.model = model::model_config_from_json(h.at("model"));
    i.dataset = h.value("dataset", nlohmann::json());
    i.has_optimizer = h.value("has_optimizer", false);
    if (i.has_optimizer) i.optimizer = h.value("optimizer", std::string("adamw"));
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint '" + path + "': malformed header: " + e.what());
  }
  return i;
}

}  // namespace

void save_checkpoint(const std::string& path, const TrainConfig& config, model::Transformer& model, Optimizer* optimizer,
                     int64_t step, const nlohmann::json& loader_state, const nlohmann::json& dataset,
                     const nlohmann::json& spike_guard) {
  model::Backend& b = model.backend();
  model::Collectives& ranks = b.collectives();
  const bool lead = ranks.rank() == 0;
  const std::vector<OptimizerState> state = optimizer ? optimizer->state() : std::vector<OptimizerState>();
  const Shard* shard = optimizer && optimizer->shard().sharded() ? &optimizer->shard() : nullptr;
  if (!lead && !shard) return;
  nlohmann::json header = {{"config", to_json(config)}, {"model", model::to_json(model.config())},
                           {"step", step},              {"loader", loader_state},
                           {"dataset", dataset},        {"params", param_list(model)},
                           {"has_optimizer", optimizer != nullptr}};
  if (!spike_guard.is_null()) header["spike_guard"] = spike_guard;
  if (optimizer) {
    header["optimizer"] = optimizer->name();
    header["optimizer_state"] = state_list(state);
  }
  const std::string h = header.dump();
  std::string out;
  put(out, kMagic);
  put(out, kVersion);
  put(out, static_cast<uint64_t>(h.size()));
  out += h;
  const auto& params = model.params();
  // The first non-finite value; the other ranks' state is gathered to the end all the same, as
  // they take part until then.
  std::string bad;
  auto put_finite = [&](const model::Tensor& t, const std::string& what, size_t i) {
    if (!lead) return;
    const Matrix m = b.download(t);
    for (const float x : m.data)
      if (!std::isfinite(x) && bad.empty())
        bad = "checkpoint '" + path + "' not written: " + what + " of '" + params[i].name +
              "' holds a non-finite value (" + std::to_string(x) + ")";
    put_matrix(out, m);
  };
  // The weights are whole on every rank.
  for (size_t i = 0; i < params.size(); ++i) put_finite(params[i].value, "the weights", i);
  for (const OptimizerState& st : state) {
    if (!shard) {
      put_finite(*st.tensor, st.what, st.param);
      continue;
    }
    // ZeRO-1: one tensor at a time from the rank that holds it (the others into a scratch tensor).
    const model::Tensor t = st.tensor ? *st.tensor : b.alloc(st.rows, st.cols, model::Role::kParam);
    const std::string what = st.name + " for the checkpoint of step " + std::to_string(step);
    ranks.start_all_gather({t}, {shard->owner[st.param]}, what);
    ranks.finish(what);
    put_finite(t, st.what, st.param);
  }
  if (!lead) return;
  if (!bad.empty()) throw Error(bad);
  put(out, crc32_of(out.data(), out.size()));
  write_file_atomic(path, out);
}

// The header's model must be the size of the body, checked before a model of that size is built.
CheckpointInfo verified_info(const Verified& v, const std::string& path) {
  CheckpointInfo info = info_of(v.header, path);
  const uint64_t floats = static_cast<uint64_t>(info.model.total_params());
  const uint64_t state = !info.has_optimizer ? 0
                         : v.header.contains("optimizer_state") ? state_floats(v.header["optimizer_state"], path)
                                                                : 2 * floats;
  const uint64_t body = v.bytes.size() - 4 - v.body, expect = (floats + state) * sizeof(float);
  if (body != expect)
    throw Error("checkpoint '" + path + "': " + std::to_string(body) + " bytes of tensor data, its header describes " +
                std::to_string(expect));
  return info;
}

CheckpointInfo read_checkpoint_info(const std::string& path) { return verified_info(read_verified(path), path); }

CheckpointInfo load_checkpoint(const std::string& path, model::Transformer& model, Optimizer* optimizer,
                               const TrainConfig* resume) {
  const Verified v = read_verified(path);
  CheckpointInfo info = verified_info(v, path);
  // Both through ModelConfig: a key an older checkpoint lacks reads as its default.
  const nlohmann::json want = model::to_json(model.config()), have = model::to_json(info.model);
  std::string diff;
  for (auto it = want.begin(); it != want.end(); ++it)
    if (!have.contains(it.key()) || have[it.key()] != it.value())
      diff += " " + it.key() + " (checkpoint " + (have.contains(it.key()) ? have[it.key()].dump() : "none") +
              ", now " + it.value().dump() + ")";
  if (resume && info.config.scheme != resume->scheme)
    diff += " method.scheme (checkpoint \"" + info.config.scheme + "\", now \"" + resume->scheme + "\")";
  if (resume && info.config.hadamard != resume->hadamard)
    diff += " method.hadamard (checkpoint " + std::to_string(info.config.hadamard) + ", now " +
            std::to_string(resume->hadamard) + ")";
  // Linears that change precision or backward quantizer midway would continue another recipe's run.
  if (resume) {
    const nlohmann::json then = to_json(info.config).at("method"), now = to_json(*resume).at("method");
    for (const char* key : {"bf16_first_layers", "bf16_last_layers", "bf16_linears", "eden_fallback", "hadamard_rounds",
                            "outlier_split"})
      if (then.at(key) != now.at(key))
        diff += std::string(" method.") + key + " (checkpoint " + then.at(key).dump() + ", now " + now.at(key).dump() + ")";
  }
  // One optimizer's state cannot continue another's.
  if (resume && info.config.optimizer != resume->optimizer)
    diff += " train.optimizer (checkpoint \"" + info.config.optimizer + "\", now \"" + resume->optimizer + "\")";
  if (!diff.empty()) throw Error("checkpoint '" + path + "' was made with another configuration:" + diff);
  const nlohmann::json params = param_list(model);
  if (v.header.value("params", nlohmann::json()) != params)
    throw Error("checkpoint '" + path + "': its parameter list does not match its model configuration");
  if (optimizer && !info.has_optimizer)
    throw Error("checkpoint '" + path + "' holds no optimizer state; it cannot be resumed");
  std::vector<OptimizerState> state;
  if (optimizer) {
    state = optimizer->state();
    const nlohmann::json have_state = v.header.value("optimizer_state", legacy_state_list(params));
    if (have_state != state_list(state))
      throw Error("checkpoint '" + path + "' holds the state of optimizer '" + info.optimizer +
                  "', which does not fit this run's '" + optimizer->name() + "' (train.optimizer)");
  }
  size_t off = v.body;
  model::Backend& b = model.backend();
  auto take = [&](model::Tensor& t) {
    Matrix m(t.rows, t.cols);
    const size_t n = m.data.size() * sizeof(float);
    std::memcpy(m.data.data(), v.bytes.data() + off, n);
    off += n;
    b.upload(m, t);
  };
  for (model::Param& p : model.params()) take(p.value);
  // Any world size and shard: each rank takes the state of its own parameters.
  for (const OptimizerState& st : state) {
    if (st.tensor) take(*st.tensor);
    else off += static_cast<size_t>(st.rows * st.cols) * sizeof(float);
  }
  return info;
}

}  // namespace q2::train
