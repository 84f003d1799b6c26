#pragma once
// Training-step benchmark: the full step (forward, backward, gradient clipping, the optimizer)
// of a preset model on synthetic tokens, per scheme, on any backend.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace q2::train {

struct StepBenchOptions {
  std::string device = "cuda";
  std::vector<std::string> presets = {"100m", "200m"};
  std::vector<std::string> schemes = {"bf16", "quartet2"};
  int64_t batch = 16, seq = 1024, vocab = 32768;
  std::string optimizer = "adamw";  // train.optimizer
  bool recompute = false;           // train.recompute
  int warmup = 2, steps = 5;
  double peak_tflops = 989.0;  // dense BF16 peak of an H100 SXM, the MFU denominator
};

struct StepBenchRow {
  std::string preset, scheme;
  int64_t params = 0;       // all parameters
  double flops_per_token = 0;  // 6 N + 12 L d seq (PaLM's model FLOPs, N without embeddings)
  double step_ms = 0, tokens_per_s = 0, mfu = 0;
  double memory_gib = 0;  // backend memory after the timed steps (its high-water mark)
  // train::plan_memory's peak plus what the backend held before the model (the CUDA context)
  double predicted_gib = 0, context_gib = 0;
  double allocated_gib = 0;  // the most the backend's allocations held at once (0: not tracked)
  double reserved_gib = 0;   // the most its allocator reserved at once (0: not tracked)
  double saved_linear_mib = 0;  // what the block linears keep for backward (X or packed X_q)
};

std::vector<StepBenchRow> bench_step(const StepBenchOptions& o, const std::function<void(const std::string&)>& log);

// Prints the rows as a table (stderr when json) and, when json, one JSON object on stdout.
void print_step_bench(const StepBenchOptions& o, const std::vector<StepBenchRow>& rows, bool json);

}  // namespace q2::train
