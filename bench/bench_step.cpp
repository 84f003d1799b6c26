#include "bench/bench_step.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/transformer.h"
#include "quant/philox.h"
#include "train/config.h"
#include "train/memory_plan.h"
#include "train/optimizer.h"

namespace q2::train {

namespace {

// A --schemes entry, "NAME" or "NAME:key=value:...", as the training config it stands for: the
// keys are the method section's (hadamard_rounds, outlier_split, ...), checked as `train` checks
// them, so that a variant is set against its scheme in one run.
TrainConfig entry_config(const TrainConfig& base, const std::string& entry) {
  std::vector<std::string> overrides;
  std::stringstream parts(entry);
  for (std::string part; std::getline(parts, part, ':');)
    overrides.push_back(overrides.empty() ? "method.scheme=" + part : "method." + part);
  TrainConfig c = load_config("", overrides);
  c.optimizer = base.optimizer;
  c.lr = base.lr;
  return c;
}

}  // namespace

std::vector<StepBenchRow> bench_step(const StepBenchOptions& o, const std::function<void(const std::string&)>& log) {
  std::vector<StepBenchRow> rows;
  const int64_t tokens = o.batch * o.seq;
  std::vector<uint32_t> inputs(static_cast<size_t>(tokens)), targets(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = philox::word(1, philox::kData, i) % static_cast<uint32_t>(o.vocab);
    targets[i] = philox::word(2, philox::kData, i) % static_cast<uint32_t>(o.vocab);
  }
  TrainConfig tc;  // the optimizer's default hyper-parameters
  tc.optimizer = o.optimizer;
  tc.lr = 1e-4;
  std::vector<TrainConfig> entries;  // every entry checked before the first model is built
  for (const std::string& scheme : o.schemes) entries.push_back(entry_config(tc, scheme));
  for (const std::string& preset : o.presets) {
    for (size_t e = 0; e < entries.size(); ++e) {
      const std::string& scheme = o.schemes[e];
      const model::ModelConfig mc = model::preset(preset, o.vocab, o.seq);
      auto backend = model::make_backend(o.device);
      backend->reset_peak_memory();
      const size_t before = backend->peak_memory_bytes();
      TrainConfig run = entries[e];
      run.seq_len = o.seq;
      run.batch_size = o.batch;
      run.recompute = o.recompute;
      model::Transformer model(mc, method_scheme(run), *backend);
      model.init(1);
      model.set_recompute(o.recompute);
      const std::unique_ptr<Optimizer> opt = make_optimizer(tc, *backend, model.params(), mc);
      size_t saved = 0;
      auto step = [&](int64_t t) {
        model.zero_grads();
        model.forward(inputs, targets, o.batch, o.seq);
        saved = model.saved_activation_bytes();
        model.backward(philox::derive_seed(3, static_cast<uint64_t>(t)), 1.0f / static_cast<float>(tokens));
        // The trainer's work: the gradient norm (read back) and clipping inside the update.
        opt->step(model.params(), model.grads(), tc.lr, tc, t, clip_scale(tc.clip, grad_norm(*backend, model.grads())));
      };
      for (int i = 0; i < o.warmup; ++i) step(i + 1);
      backend->synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < o.steps; ++i) step(o.warmup + i + 1);
      backend->synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / o.steps;

      StepBenchRow r;
      r.preset = preset;
      r.scheme = scheme;
      r.params = mc.total_params();
      r.flops_per_token = 6.0 * static_cast<double>(mc.non_embedding_params() + mc.vocab * mc.d_model) +
                          12.0 * static_cast<double>(mc.n_layers * mc.d_model * o.seq);
      r.step_ms = s * 1e3;
      r.tokens_per_s = static_cast<double>(tokens) / s;
      r.mfu = r.tokens_per_s * r.flops_per_token / (o.peak_tflops * 1e12);
      r.memory_gib = static_cast<double>(backend->peak_memory_bytes()) / (1 << 30);
      r.allocated_gib = static_cast<double>(backend->peak_allocated_bytes()) / (1 << 30);
      r.reserved_gib = static_cast<double>(backend->peak_reserved_bytes()) / (1 << 30);
      r.context_gib = static_cast<double>(before) / (1 << 30);
      // No evaluation here: its forward's scratch is not made.
      r.predicted_gib =
          static_cast<double>(before + plan_memory(mc, run, o.device, 1, false).peak()) / (1 << 30);
      r.saved_linear_mib = static_cast<double>(saved) / (1 << 20);
      rows.push_back(r);
      char buf[384];
      std::snprintf(buf, sizeof buf,
                    "[bench step] %s %s: %.1f ms/step, %.0f tokens/s, MFU %.1f%%, memory %.2f GiB (predicted %.2f GiB; "
                    "allocations at most %.2f GiB, pool reserved at most %.2f GiB), linears keep %.1f MiB",
                    preset.c_str(), scheme.c_str(), r.step_ms, r.tokens_per_s, 100 * r.mfu, r.memory_gib,
                    r.predicted_gib, r.allocated_gib, r.reserved_gib, r.saved_linear_mib);
      log(buf);
    }
  }
  return rows;
}

void print_step_bench(const StepBenchOptions& o, const std::vector<StepBenchRow>& rows, bool json) {
  FILE* t = json ? stderr : stdout;
  std::fprintf(t,
               "device %s, batch %lld x seq %lld, vocab %lld, %s%s, %d timed steps after %d warm-up, MFU vs %.0f "
               "TFLOP/s\n",
               o.device.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.seq),
               static_cast<long long>(o.vocab), o.optimizer.c_str(), o.recompute ? ", recompute" : "", o.steps,
               o.warmup, o.peak_tflops);
  int w = 9;  // the scheme column: as wide as the longest entry
  for (const std::string& s : o.schemes) w = std::max(w, static_cast<int>(s.size()));
  std::fprintf(t, "%-6s %-*s %10s %12s %7s %10s %12s %9s\n", "preset", w, "scheme", "ms/step", "tokens/s", "MFU",
               "memory", "linears keep", ("vs " + o.schemes.front()).c_str());
  for (const StepBenchRow& r : rows) {
    double base = 0;
    for (const StepBenchRow& b : rows)
      if (b.preset == r.preset && b.scheme == o.schemes.front()) base = b.step_ms;
    std::fprintf(t, "%-6s %-*s %10.1f %12.0f %6.1f%% %8.2fGiB %9.1fMiB %8.2fx\n", r.preset.c_str(), w, r.scheme.c_str(),
                 r.step_ms, r.tokens_per_s, 100 * r.mfu, r.memory_gib, r.saved_linear_mib,
                 base > 0 ? r.step_ms / base : 0.0);
  }
  if (!json) return;
  nlohmann::json j;
  j["config"] = {{"device", o.device},       {"batch", o.batch},         {"seq", o.seq},
                 {"vocab", o.vocab},         {"optimizer", o.optimizer}, {"recompute", o.recompute},
                 {"warmup", o.warmup},       {"steps", o.steps},         {"peak_tflops", o.peak_tflops}};
  for (const StepBenchRow& r : rows)
    j["rows"].push_back({{"preset", r.preset},
                         {"scheme", r.scheme},
                         {"params", r.params},
                         {"flops_per_token", r.flops_per_token},
                         {"step_ms", r.step_ms},
                         {"tokens_per_s", r.tokens_per_s},
                         {"mfu", r.mfu},
                         {"memory_gib", r.memory_gib},
                         {"predicted_gib", r.predicted_gib},
                         {"context_gib", r.context_gib},
                         {"allocated_gib", r.allocated_gib},
                         {"reserved_gib", r.reserved_gib},
                         {"saved_linear_mib", r.saved_linear_mib}});
  std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace q2::train
