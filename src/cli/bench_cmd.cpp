// quartet2 bench quant|layer|step: GPU benchmarks, each measured side by side against its
// baseline in one run (a device copy, the BF16 layer, the BF16 step).
#include <cstdio>
#include <functional>
#include <memory>

#include "bench/bench_step.h"
#include "cli/commands.h"
#include "common/error.h"

#ifdef Q2_HAVE_CUDA
#include "bench/bench_layer.h"
#include "bench/bench_quant.h"
#endif

namespace q2::cli {

namespace {

// Registers one benchmark with a --json flag; without CUDA it fails with a clear message.
void add_one(CLI::App& bench, const char* name, const char* what, std::function<void(bool)> run) {
  auto* cmd = bench.add_subcommand(name, what);
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print one JSON object instead of a table");
  cmd->callback([json, run, name] {
    if (!run) throw Error(std::string("'bench ") + name + "' needs a quartet2 built with CUDA (nvcc found at configure time)");
    run(*json);
  });
}

}  // namespace

void add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "GPU benchmarks (need a CUDA build and a GPU)");
  bench->require_subcommand(1);
  std::function<void(bool)> quant, layer;
#ifdef Q2_HAVE_CUDA
  quant = cuda::run_bench_quant;
  layer = cuda::run_bench_layer;
#endif
  add_one(*bench, "quant", "quantization kernels: bytes moved per second vs a device-to-device copy", quant);
  add_one(*bench, "layer", "one linear layer, forward + backward: bf16, quartet2 and nvidia at four shapes", layer);

  auto* step = bench->add_subcommand("step", "training step of the 100m and 200m presets: bf16 against quartet2");
  auto so = std::make_shared<train::StepBenchOptions>();
  auto json = std::make_shared<bool>(false);
  step->add_flag("--json", *json, "print one JSON object instead of a table");
  step->add_option("--device", so->device, "backend")->capture_default_str();
  step->add_option("--presets", so->presets, "model presets")->capture_default_str();
  step->add_option("--schemes", so->schemes,
                   "linear-layer schemes (the first is the baseline); NAME:key=value:... sets method keys, e.g. "
                   "quartet2:hadamard_rounds=2:outlier_split=0.5")
      ->capture_default_str();
  step->add_option("--batch", so->batch, "sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--seq", so->seq, "sequence length")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--vocab", so->vocab, "vocabulary size")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--steps", so->steps, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--optimizer", so->optimizer, "adamw or muon (train.optimizer)")
      ->check(CLI::IsMember({"adamw", "muon"}))
      ->capture_default_str();
  step->add_flag("--recompute", so->recompute, "recompute each block's forward in backward (train.recompute)");
  step->add_option("--peak-tflops", so->peak_tflops, "the device's dense BF16 peak, for MFU")->capture_default_str();
  step->callback([so, json] {
    const auto rows = train::bench_step(*so, [](const std::string& l) { std::fprintf(stderr, "%s\n", l.c_str()); });
    train::print_step_bench(*so, rows, *json);
  });
}

}  // namespace q2::cli
