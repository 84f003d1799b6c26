// quartet2 bench quant|layer|step: GPU benchmarks, each measured side by side against its
// baseline in one run (a device copy, the BF16 layer, the BF16 step).
#include <functional>
#include <memory>

#include "cli/commands.h"
#include "common/error.h"

#ifdef Q2_HAVE_CUDA
#include "cuda/quant.h"
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
  std::function<void(bool)> quant;
#ifdef Q2_HAVE_CUDA
  quant = cuda::run_bench_quant;
#endif
  add_one(*bench, "quant", "quantization kernels: bytes moved per second vs a device-to-device copy", quant);
}

}  // namespace q2::cli
