#pragma once

namespace q2::cuda {

// Forward + backward time of one CUDA linear layer (bf16, quartet2, nvidia) at four LLM
// shapes, each scheme's ratio to bf16 and TFLOP/s (6 M K N per step), plus a per-kernel
// breakdown of quartet2 at each shape. A table, or one JSON object when json is true (the
// table then goes to stderr).
void run_bench_layer(bool json);

}  // namespace q2::cuda
