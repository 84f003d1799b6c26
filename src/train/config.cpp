#include "train/config.h"

#include <type_traits>

#include "common/error.h"
#include "model/backend.h"
#include "train/tomlpp.h"

namespace q2::train {

using nlohmann::json;

namespace {

// Every config field once: (section, key, member). to_json and from_json both walk this list.
template <class C, class F>
void for_each_field(C& c, F&& f) {
  f("model", "preset", c.preset);
  f("model", "seq_len", c.seq_len);
  f("data", "dir", c.data_dir);
  f("out", "dir", c.out_dir);
  f("method", "scheme", c.scheme);
  f("method", "hadamard", c.hadamard);
  f("method", "device", c.device);
  f("method", "gemm", c.gemm);
  f("train", "batch_size", c.batch_size);
  f("train", "grad_accum", c.grad_accum);
  f("train", "steps", c.steps);
  f("train", "lr", c.lr);
  f("train", "min_lr_ratio", c.min_lr_ratio);
  f("train", "warmup_frac", c.warmup_frac);
  f("train", "schedule", c.schedule);
  f("train", "decay_frac", c.decay_frac);
  f("train", "weight_decay", c.weight_decay);
  f("train", "beta1", c.beta1);
  f("train", "beta2", c.beta2);
  f("train", "eps", c.eps);
  f("train", "clip", c.clip);
  f("train", "seed", c.seed);
  f("train", "stop_at", c.stop_at);
  f("log", "log_every", c.log_every);
  f("log", "eval_every", c.eval_every);
  f("log", "eval_batches", c.eval_batches);
  f("log", "ckpt_every", c.ckpt_every);
  f("log", "dump_every", c.dump_every);
  f("dist", "world_size", c.world_size);
  f("dist", "rank", c.rank);
  f("dist", "local_rank", c.local_rank);
  f("dist", "rendezvous", c.rendezvous);
  f("dist", "timeout_s", c.dist_timeout_s);
  f("dist", "bucket_mb", c.bucket_mb);
}

}  // namespace

json to_json(const TrainConfig& c) {
  json j = json::object();
  for_each_field(c, [&](const char* section, const char* key, const auto& v) { j[section][key] = v; });
  return j;
}

TrainConfig from_json(const json& j) {
  TrainConfig c;
  try {
    for_each_field(c, [&](const char* section, const char* key, auto& v) {
      // Checkpoints from before data parallelism (or before a dist key) lack it; the dist
      // section describes the launch, not the run, so the defaults stand in.
      if (std::string(section) == "dist" && !(j.contains(section) && j.at(section).contains(key))) return;
      const json& value = j.at(section).at(key);
      // nlohmann casts a float to an integer field as it is: undefined behaviour out of range.
      if (std::is_integral_v<std::decay_t<decltype(v)>> && !value.is_number_integer())
        throw Error("config: '" + std::string(section) + "." + key + "' must be an integer, got " + value.dump());
      value.get_to(v);
    });
  } catch (const json::exception& e) {
    throw Error(std::string("config: ") + e.what());
  }
  return c;
}

namespace {

// Sets key (dotted) in j to `value`, converted to the type the default holds there.
void set_typed(json& j, const std::string& key, const json& value, const std::string& origin) {
  const auto dot = key.find('.');
  if (dot == std::string::npos || !j.contains(key.substr(0, dot)) || !j[key.substr(0, dot)].contains(key.substr(dot + 1)))
    throw Error(origin + ": unknown option '" + key + "'");
  json& slot = j[key.substr(0, dot)][key.substr(dot + 1)];
  auto bad = [&] { throw Error(origin + ": option '" + key + "' expects a " + slot.type_name() + ", got " + value.dump()); };
  if (slot.is_string()) {
    if (!value.is_string()) bad();
    slot = value;
  } else if (slot.is_number_integer()) {
    if (value.is_number_integer()) slot = value;
    // An integral float within int64's range (casting one outside it is undefined behaviour).
    else if (const double d = value.is_number_float() ? value.get<double>() : 0.5;
             d >= -0x1p63 && d < 0x1p63 && d == static_cast<double>(static_cast<int64_t>(d)))
      slot = static_cast<int64_t>(d);
    else bad();
  } else if (slot.is_number_float()) {
    if (!value.is_number()) bad();
    slot = value.get<double>();
  } else {
    bad();
  }
}

json parse_scalar(const std::string& text) {
  try {
    size_t used = 0;
    const long long i = std::stoll(text, &used);
    if (used == text.size()) return i;
  } catch (...) {
  }
  try {
    size_t used = 0;
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (...) {
  }
  return text;
}

}  // namespace

TrainConfig load_config(const std::string& toml_path, const std::vector<std::string>& overrides) {
  json j = to_json(TrainConfig{});
  if (!toml_path.empty()) {
    toml::table tbl;
    try {
      tbl = toml::parse_file(toml_path);
    } catch (const toml::parse_error& e) {
      throw Error("config file '" + toml_path + "': " + std::string(e.description()) + " at line " +
                  std::to_string(e.source().begin.line));
    }
    for (const auto& [section, node] : tbl) {
      const toml::table* t = node.as_table();
      if (!t) throw Error("config file '" + toml_path + "': top-level key '" + std::string(section.str()) +
                          "' must be a [section]");
      for (const auto& [key, v] : *t) {
        json value;
        if (auto s = v.value<std::string>(); v.is_string()) value = *s;
        else if (v.is_integer()) value = *v.value<int64_t>();
        else if (v.is_floating_point()) value = *v.value<double>();
        else throw Error("config file '" + toml_path + "': '" + std::string(section.str()) + "." + std::string(key.str()) +
                         "' must be a string or a number");
        set_typed(j, std::string(section.str()) + "." + std::string(key.str()), value, "config file '" + toml_path + "'");
      }
    }
  }
  for (const std::string& o : overrides) {
    std::string s = o.rfind("--", 0) == 0 ? o.substr(2) : o;
    const auto eq = s.find('=');
    if (eq == std::string::npos) throw Error("override '" + o + "' must look like --section.key=value");
    set_typed(j, s.substr(0, eq), parse_scalar(s.substr(eq + 1)), "override '" + o + "'");
  }
  TrainConfig c = from_json(j);
  validate(c);
  return c;
}

void validate(const TrainConfig& c) {
  auto bad = [](const std::string& m) { throw Error("config: " + m); };
  if (c.batch_size < 1 || c.grad_accum < 1 || c.steps < 1) bad("train.batch_size, train.grad_accum and train.steps must be >= 1");
  if (!(c.lr > 0)) bad("train.lr must be positive");
  if (c.stop_at < 0 || c.stop_at > c.steps) bad("train.stop_at must be in [0, train.steps]");
  if (c.schedule != "cosine" && c.schedule != "wsd") bad("train.schedule must be 'cosine' or 'wsd', got '" + c.schedule + "'");
  if (c.warmup_frac < 0 || c.warmup_frac >= 1) bad("train.warmup_frac must be in [0, 1)");
  if (c.decay_frac <= 0 || c.decay_frac > 1) bad("train.decay_frac must be in (0, 1]");
  if (c.device != "cpu" && c.device != "cuda") bad("method.device must be 'cpu' or 'cuda', got '" + c.device + "'");
  if (!model::is_gemm_path(c.gemm))
    bad("method.gemm must be 'auto', 'emulated' or 'native', got '" + c.gemm + "'");
  if (c.log_every < 1 || c.eval_every < 1 || c.ckpt_every < 1 || c.eval_batches < 1)
    bad("log.log_every, log.eval_every, log.ckpt_every and log.eval_batches must be >= 1");
  if (c.dump_every < 0) bad("log.dump_every must be >= 0 (0: no tensor dumps)");
  if (c.world_size < 0) bad("dist.world_size must be >= 1 (0: from the environment)");
  if (c.world_size == 0 && c.rank >= 0) bad("dist.rank needs dist.world_size (--world-size)");
  if (c.world_size > 0 && (c.rank < 0 || c.rank >= c.world_size))
    bad("dist.rank must be in [0, " + std::to_string(c.world_size) + "), got " + std::to_string(c.rank));
  if (c.world_size > 1 && c.rendezvous.empty())
    bad("dist.rendezvous (--rendezvous DIR, a directory all ranks share) is required when dist.world_size > 1");
  if (!(c.dist_timeout_s > 0)) bad("dist.timeout_s must be positive");
  if (!(c.bucket_mb >= 0)) bad("dist.bucket_mb must be >= 0 (0: one all-reduce after backward)");
}

void resolve_dist(TrainConfig& c, const std::function<const char*(const char*)>& env) {
  auto int_env = [&](const char* name) -> int64_t {
    const char* v = env(name);
    if (!v) return -1;
    const json parsed = parse_scalar(v);
    if (!parsed.is_number_integer() || parsed.get<int64_t>() < 0)
      throw Error(std::string("environment variable ") + name + " must be a non-negative integer, got '" + v + "'");
    return parsed.get<int64_t>();
  };
  if (c.world_size == 0) {
    const int64_t size = int_env("OMPI_COMM_WORLD_SIZE");
    if (size < 0) {
      c.world_size = 1;
      c.rank = 0;
    } else {
      if (size == 0) throw Error("environment variable OMPI_COMM_WORLD_SIZE must be >= 1, got '0'");
      c.world_size = size;
      c.rank = int_env("OMPI_COMM_WORLD_RANK");
      if (c.rank < 0) throw Error("OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not");
      if (c.local_rank < 0) c.local_rank = int_env("OMPI_COMM_WORLD_LOCAL_RANK");
      if (c.rendezvous.empty()) c.rendezvous = c.out_dir + "/rendezvous";
    }
  }
  if (c.local_rank < 0) c.local_rank = c.rank;
  validate(c);
}

}  // namespace q2::train
