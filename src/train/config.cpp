#include "train/config.h"

#include "linear/outlier_split.h"

#include <type_traits>

#include <algorithm>
#include <charconv>
#include <iterator>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/error.h"
#include "linear/outlier_split.h"
#include "linear/scheme.h"
#include "model/backend.h"
#include "model/muon.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "train/tomlpp.h"

namespace q2::train {

using nlohmann::json;

namespace {

// Every config field once: (section, key, member). to_json and from_json both walk this list.
// The model section's optional members are unset unless given (model::ModelOverrides).
template <class C, class F>
void for_each_field(C& c, F&& f) {
  f("model", "preset", c.preset);
  f("model", "seq_len", c.seq_len);
  f("model", "depth", c.model.depth);
  model::for_each_model_key(c.model, [&](const char* key, auto& v) { f("model", key, v); });
  f("data", "dir", c.data_dir);
  f("out", "dir", c.out_dir);
  f("method", "scheme", c.scheme);
  f("method", "hadamard", c.hadamard);
  f("method", "eden_fallback", c.eden_fallback);
  f("method", "hadamard_rounds", c.hadamard_rounds);
  f("method", "outlier_split", c.outlier_split);
  f("method", "device", c.device);
  f("method", "gemm", c.gemm);
  f("method", "bf16_first_layers", c.precision.bf16_first_layers);
  f("method", "bf16_last_layers", c.precision.bf16_last_layers);
  f("method", "bf16_linears", c.precision.bf16_linears);
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
  f("train", "spike_guard", c.spike_guard);
  f("train", "spike_window", c.spike_window);
  f("train", "recompute", c.recompute);
  f("train", "optimizer", c.optimizer);
  f("train", "matrix_lr", c.matrix_lr);
  f("train", "embedding_lr", c.embedding_lr);
  f("train", "head_lr", c.head_lr);
  f("train", "scalar_lr", c.scalar_lr);
  f("train", "muon_momentum", c.muon_momentum);
  f("train", "muon_momentum_start", c.muon_momentum_start);
  f("train", "muon_momentum_warmup", c.muon_momentum_warmup);
  f("train", "muon_beta2", c.muon_beta2);
  f("train", "muon_weight_decay", c.muon_weight_decay);
  f("train", "muon_ns", c.muon_ns);
  f("train", "seed", c.seed);
  f("train", "stop_at", c.stop_at);
  f("log", "log_every", c.log_every);
  f("log", "eval_every", c.eval_every);
  f("log", "eval_batches", c.eval_batches);
  f("log", "ckpt_every", c.ckpt_every);
  f("log", "dump_every", c.dump_every);
  f("log", "dump_layers", c.dump_layers);
  f("log", "dump_rows", c.dump_rows);
  f("log", "param_grad_norms", c.param_grad_norms);
  f("dist", "world_size", c.world_size);
  f("dist", "rank", c.rank);
  f("dist", "local_rank", c.local_rank);
  f("dist", "rendezvous", c.rendezvous);
  f("dist", "timeout_s", c.dist_timeout_s);
  f("dist", "bucket_mb", c.bucket_mb);
  f("dist", "zero", c.zero);
}

template <class T>
struct Optional : std::false_type {
  using type = T;
};
template <class T>
struct Optional<std::optional<T>> : std::true_type {
  using type = T;
};

// The defaults, with every optional field present as its type's zero value: what set_typed
// reads a key's type from.
json typed_defaults() {
  json j = json::object();
  const TrainConfig defaults;
  for_each_field(defaults, [&](const char* section, const char* key, const auto& v) {
    using T = std::remove_cvref_t<decltype(v)>;
    if constexpr (Optional<T>::value)
      j[section][key] = typename Optional<T>::type{};
    else
      j[section][key] = v;
  });
  return j;
}

// The keys that came with train.optimizer, train.recompute, the precision overrides, the
// spike guard, log.dump_layers, log.dump_rows, log.param_grad_norms, method.eden_fallback,
// method.hadamard_rounds and method.outlier_split (older checkpoints lack them).
bool added_later(const std::string& section, const std::string& key) {
  static const char* const train[] = {"optimizer",     "matrix_lr",           "embedding_lr",         "head_lr",
                                      "scalar_lr",     "muon_momentum",       "muon_momentum_start",  "muon_momentum_warmup",
                                      "muon_beta2",    "muon_weight_decay",   "muon_ns",              "recompute",
                                      "spike_guard",   "spike_window"};
  static const char* const method[] = {"bf16_first_layers", "bf16_last_layers", "bf16_linears", "eden_fallback",
                                       "hadamard_rounds",   "outlier_split"};
  if (section == "train") return std::find(std::begin(train), std::end(train), key) != std::end(train);
  if (section == "log") return key == "dump_layers" || key == "dump_rows" || key == "param_grad_norms";
  return section == "method" && std::find(std::begin(method), std::end(method), key) != std::end(method);
}

}  // namespace

json to_json(const TrainConfig& c) {
  json j = json::object();
  for_each_field(c, [&](const char* section, const char* key, const auto& v) {
    if constexpr (Optional<std::remove_cvref_t<decltype(v)>>::value) {
      if (v) j[section][key] = *v;
    } else {
      j[section][key] = v;
    }
  });
  return j;
}

TrainConfig from_json(const json& j) {
  TrainConfig c;
  try {
    for_each_field(c, [&](const char* section, const char* key, auto& field) {
      using F = std::remove_reference_t<decltype(field)>;
      const bool given = j.contains(section) && j.at(section).contains(key) && !j.at(section).at(key).is_null();
      // Checkpoints from before data parallelism (or before a dist key) lack it; the dist
      // section describes the launch, not the run, so the defaults stand in. An optional key is
      // absent when unset. So are the optimizer keys in checkpoints from before Muon (those runs
      // used the defaults' AdamW) and train.recompute in those from before it.
      if (!given && (std::string(section) == "dist" || Optional<F>::value || added_later(section, key))) return;
      const json& value = j.at(section).at(key);
      // get_to would cast a float into an integer field as it is (undefined behaviour out of range)
      // and wrap an integer the field cannot hold (train.seed = -1 to 2^64 - 1).
      using T = typename Optional<F>::type;
      if constexpr (std::is_same_v<T, bool>) {
        if (!value.is_boolean())
          throw Error("config: '" + std::string(section) + "." + key + "' must be true or false, got " + value.dump());
      } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        if (!value.is_array() || !std::all_of(value.begin(), value.end(), [](const json& e) { return e.is_string(); }))
          throw Error("config: '" + std::string(section) + "." + key + "' must be a list of names, got " + value.dump());
      } else if constexpr (std::is_integral_v<T>) {
        if (!value.is_number_integer())
          throw Error("config: '" + std::string(section) + "." + key + "' must be an integer, got " + value.dump());
        if (!(value.is_number_unsigned() ? std::in_range<T>(value.get<uint64_t>()) : std::in_range<T>(value.get<int64_t>())))
          throw Error(std::string("config: ") + section + "." + key + " must be in [" +
                      std::to_string(std::numeric_limits<T>::min()) + ", " + std::to_string(std::numeric_limits<T>::max()) +
                      "], got " + value.dump());
      }
      if constexpr (Optional<F>::value)
        field = value.get<T>();
      else
        value.get_to(field);
    });
  } catch (const json::exception& e) {
    throw Error(std::string("config: ") + e.what());
  }
  return c;
}

namespace {

// Sets key (dotted) in j to `value`, converted to the type `types` holds there (typed_defaults).
void set_typed(json& j, const json& types, const std::string& key, const json& value, const std::string& origin) {
  const auto dot = key.find('.');
  const std::string section = key.substr(0, dot), name = dot == std::string::npos ? "" : key.substr(dot + 1);
  if (dot == std::string::npos || !types.contains(section) || !types[section].contains(name))
    throw Error(origin + ": unknown option '" + key + "'");
  const json& type = types[section][name];
  json& slot = j[section][name];
  auto bad = [&] { throw Error(origin + ": option '" + key + "' expects a " + type.type_name() + ", got " + value.dump()); };
  if (type.is_boolean()) {
    // A TOML boolean, or true / false on the command line.
    if (value.is_boolean()) slot = value;
    else if (value == "true" || value == "false") slot = value == "true";
    else bad();
  } else if (type.is_string()) {
    if (!value.is_string()) bad();
    slot = value;
  } else if (type.is_number_integer()) {
    // A whole float (1e6) counts; the range test keeps the cast defined for 1e30 and inf.
    const auto whole = [](double d) { return std::trunc(d) == d && std::abs(d) < 0x1p63; };
    if (value.is_number_integer()) slot = value;
    else if (value.is_number_float() && whole(value.get<double>())) slot = static_cast<int64_t>(value.get<double>());
    else bad();
  } else if (type.is_number_float()) {
    if (!value.is_number()) bad();
    slot = value.get<double>();
  } else if (type.is_array()) {
    // A TOML array of strings, or names separated by commas on the command line ("" for none).
    if (value.is_array()) {
      slot = value;
    } else if (value.is_string()) {
      slot = json::array();
      const std::string text = value.get<std::string>();
      for (size_t at = 0; !text.empty();) {
        const size_t comma = std::min(text.find(',', at), text.size());
        std::string name = text.substr(at, comma - at);
        name.erase(0, name.find_first_not_of(' '));
        name.erase(name.find_last_not_of(' ') + 1);
        slot.push_back(name);
        if (comma == text.size()) break;
        at = comma + 1;
      }
    } else {
      throw Error(origin + ": option '" + key + "' expects a list of names (comma-separated on the command line), got " +
                  value.dump());
    }
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

std::pair<std::string, json> parse_override(const std::string& o) {
  const std::string s = o.rfind("--", 0) == 0 ? o.substr(2) : o;
  const auto eq = s.find('=');
  if (eq == std::string::npos) throw Error("override '" + o + "' must look like --section.key=value");
  return {s.substr(0, eq), parse_scalar(s.substr(eq + 1))};
}

TrainConfig load_config(const std::string& toml_path, const std::vector<std::string>& overrides) {
  json j = to_json(TrainConfig{});
  const json types = typed_defaults();
  bool seq_len_given = false;
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
        else if (v.is_boolean()) value = *v.value<bool>();
        else if (const toml::array* a = v.as_array(); a && (a->empty() || a->is_homogeneous(toml::node_type::string))) {
          value = json::array();
          for (const toml::node& e : *a) value.push_back(*e.value<std::string>());
        } else throw Error("config file '" + toml_path + "': '" + std::string(section.str()) + "." + std::string(key.str()) +
                           "' must be a string, a number, a boolean or an array of strings");
        const std::string dotted = std::string(section.str()) + "." + std::string(key.str());
        set_typed(j, types, dotted, value, "config file '" + toml_path + "'");
        seq_len_given |= dotted == "model.seq_len";
      }
    }
  }
  for (const std::string& o : overrides) {
    const auto [key, value] = parse_override(o);
    set_typed(j, types, key, value, "override '" + o + "'");
    seq_len_given |= key == "model.seq_len";
  }
  TrainConfig c = from_json(j);
  if (!seq_len_given) c.seq_len = model::preset_seq_len(c.preset);
  validate(c);
  return c;
}

model::ModelConfig model_config(const TrainConfig& c, int64_t vocab) {
  return model::resolve(c.preset, c.model, vocab, c.seq_len);
}

linear::Scheme method_scheme(const TrainConfig& c) {
  linear::Scheme s = linear::scheme_by_name(c.scheme, c.hadamard, c.eden_fallback, c.hadamard_rounds);
  s.outlier_split = c.outlier_split;
  return s;
}

namespace {

[[noreturn]] void bad(const std::string& m) { throw Error("config: " + m); }

// The shortest text that reads back as v: 2, 1e-08, nan, inf.
template <class T>
std::string str(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[32];
    return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
  } else {
    return std::to_string(v);
  }
}

// Rules are written as what holds, so NaN (every comparison false) fails them too.
template <class T>
void require(bool ok, const char* key, const std::string& rule, T v) {
  if (!ok) bad(std::string(key) + " must be " + rule + ", got " + str(v));
}

}  // namespace

void validate(const TrainConfig& c) {
  require(c.seq_len >= 1, "model.seq_len", ">= 1", c.seq_len);
  require(linear::valid_hadamard(c.hadamard), "method.hadamard",
          std::string("0 (the scheme's own) or ") + quant::kRhtSizes, c.hadamard);
  require(quant::valid_eden_fallback(c.eden_fallback), "method.eden_fallback", "0 (off) or in (0, 1)",
          c.eden_fallback);
  require(c.hadamard_rounds == 1 || c.hadamard_rounds == 2, "method.hadamard_rounds", "1 or 2", c.hadamard_rounds);
  require(c.outlier_split == 0 || linear::valid_outlier_split(c.outlier_split), "method.outlier_split",
          "0 (off) or in [0.5, 1)", c.outlier_split);
  if (c.device != "cpu" && c.device != "cuda") bad("method.device must be 'cpu' or 'cuda', got '" + c.device + "'");
  if (!model::is_gemm_path(c.gemm))
    bad("method.gemm must be 'auto', 'emulated' or 'native', got '" + c.gemm + "'");

  require(c.batch_size >= 1, "train.batch_size", ">= 1", c.batch_size);
  require(c.grad_accum >= 1, "train.grad_accum", ">= 1", c.grad_accum);
  require(c.steps >= 1, "train.steps", ">= 1", c.steps);
  require(c.stop_at >= 0 && c.stop_at <= c.steps, "train.stop_at", "in [0, train.steps = " + str(c.steps) + "]", c.stop_at);
  // The trainer counts the run's tokens in an int64.
  int64_t tokens = c.steps;
  for (const int64_t f : {c.batch_size, c.grad_accum, c.seq_len, std::max<int64_t>(c.world_size, 1)})
    if (__builtin_mul_overflow(tokens, f, &tokens))
      bad("the run's tokens, train.steps * train.batch_size * train.grad_accum * model.seq_len * dist.world_size, must "
          "be below 2^63, got " + str(c.steps) + " * " + str(c.batch_size) + " * " + str(c.grad_accum) + " * " +
          str(c.seq_len) + " * " + str(std::max<int64_t>(c.world_size, 1)));
  require(c.lr > 0 && std::isfinite(c.lr), "train.lr", "finite and > 0", c.lr);
  require(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "train.min_lr_ratio", "in [0, 1]", c.min_lr_ratio);
  if (c.schedule != "cosine" && c.schedule != "wsd") bad("train.schedule must be 'cosine' or 'wsd', got '" + c.schedule + "'");
  require(c.warmup_frac >= 0 && c.warmup_frac < 1, "train.warmup_frac", "in [0, 1)", c.warmup_frac);
  require(c.decay_frac > 0 && c.decay_frac <= 1, "train.decay_frac", "in (0, 1]", c.decay_frac);
  // Otherwise the learning rate jumps from its peak into the middle of the decay when warmup ends.
  if (c.schedule == "wsd" && c.warmup_frac + c.decay_frac > 1)
    bad("train.warmup_frac + train.decay_frac must be at most 1 with train.schedule 'wsd', got " + str(c.warmup_frac) +
        " + " + str(c.decay_frac));
  require(c.weight_decay >= 0 && std::isfinite(c.weight_decay), "train.weight_decay", "finite and >= 0", c.weight_decay);
  require(c.beta1 >= 0 && c.beta1 < 1, "train.beta1", "in [0, 1)", c.beta1);
  require(c.beta2 >= 0 && c.beta2 < 1, "train.beta2", "in [0, 1)", c.beta2);
  require(c.eps > 0 && std::isfinite(c.eps), "train.eps", "finite and > 0", c.eps);
  require(c.clip >= 0 && std::isfinite(c.clip), "train.clip", "finite and >= 0 (0: no clipping)", c.clip);
  if (c.optimizer != "adamw" && c.optimizer != "muon")
    bad("train.optimizer must be 'adamw' or 'muon', got '" + c.optimizer + "'");
  require(c.matrix_lr >= 0 && std::isfinite(c.matrix_lr), "train.matrix_lr", "finite and >= 0", c.matrix_lr);
  require(c.embedding_lr >= 0 && std::isfinite(c.embedding_lr), "train.embedding_lr", "finite and >= 0", c.embedding_lr);
  require(c.head_lr >= 0 && std::isfinite(c.head_lr), "train.head_lr", "finite and >= 0", c.head_lr);
  require(c.scalar_lr >= 0 && std::isfinite(c.scalar_lr), "train.scalar_lr", "finite and >= 0", c.scalar_lr);
  require(c.muon_momentum >= 0 && c.muon_momentum < 1, "train.muon_momentum", "in [0, 1)", c.muon_momentum);
  require(c.muon_momentum_start >= 0 && c.muon_momentum_start < 1, "train.muon_momentum_start", "in [0, 1)",
          c.muon_momentum_start);
  require(c.muon_momentum_warmup >= 0, "train.muon_momentum_warmup", ">= 0 (0: muon_momentum from the start)",
          c.muon_momentum_warmup);
  require(c.muon_beta2 >= 0 && c.muon_beta2 < 1, "train.muon_beta2", "in [0, 1)", c.muon_beta2);
  require(c.muon_weight_decay >= 0 && std::isfinite(c.muon_weight_decay), "train.muon_weight_decay", "finite and >= 0",
          c.muon_weight_decay);
  if (model::MuonOrtho o; !model::muon_ortho_from_name(c.muon_ns, &o))
    bad("train.muon_ns must be 'quintic' or 'polar_express', got '" + c.muon_ns + "'");

  require(c.log_every >= 1, "log.log_every", ">= 1", c.log_every);
  require(c.eval_every >= 1, "log.eval_every", ">= 1", c.eval_every);
  require(c.eval_batches >= 1, "log.eval_batches", ">= 1", c.eval_batches);
  require(c.ckpt_every >= 1, "log.ckpt_every", ">= 1", c.ckpt_every);
  require(c.dump_every >= 0, "log.dump_every", ">= 0 (0: no tensor dumps)", c.dump_every);
  if (c.dump_layers != "ends" && c.dump_layers != "all")
    bad("log.dump_layers must be 'ends' (first and last layer) or 'all', got '" + c.dump_layers + "'");
  require(c.dump_rows >= 0, "log.dump_rows", ">= 0 (0: every token)", c.dump_rows);

  require(c.world_size >= 0, "dist.world_size", ">= 1 (0: from the environment)", c.world_size);
  require(c.rank >= -1, "dist.rank", ">= 0 (-1: from the environment)", c.rank);
  if (c.world_size == 0 && c.rank >= 0) bad("dist.rank needs dist.world_size (--world-size)");
  if (c.world_size > 0 && (c.rank < 0 || c.rank >= c.world_size))
    bad("dist.rank must be in [0, " + std::to_string(c.world_size) + "), got " + std::to_string(c.rank));
  require(c.local_rank >= -1, "dist.local_rank", ">= 0 (-1: the rank)", c.local_rank);
  if (c.world_size > 1 && c.rendezvous.empty())
    bad("dist.rendezvous (--rendezvous DIR, a directory all ranks share) is required when dist.world_size > 1");
  // Bounded because deadlines are steady_clock time points (int64 nanoseconds, ~292 years) and
  // GradReducer turns the bucket size into a size_t of bytes.
  require(c.dist_timeout_s > 0 && c.dist_timeout_s <= 1e9, "dist.timeout_s", "in (0, 1e9]", c.dist_timeout_s);
  require(c.bucket_mb >= 0 && c.bucket_mb <= 1e9, "dist.bucket_mb", "in [0, 1e9] (0: one all-reduce after backward)",
          c.bucket_mb);
  require(c.zero == 0 || c.zero == 1, "dist.zero", "0 or 1 (1: ZeRO-1, optimizer state sharded over the ranks)",
          c.zero);

  require(c.spike_guard == 0 || (c.spike_guard > 1 && std::isfinite(c.spike_guard)), "train.spike_guard",
          "0 (off) or finite and > 1", c.spike_guard);
  // The window travels in every checkpoint's header.
  require(c.spike_window >= 1 && c.spike_window <= 10000, "train.spike_window", "in [1, 10000]", c.spike_window);

  // The model's shape and options, named where wrong (the vocabulary comes with the data), and
  // the precision overrides against its layers and linears.
  model::validate(c.precision, model_config(c, 2));
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
