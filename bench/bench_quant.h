#pragma once

namespace q2::cuda {

// Times every kernel on >= 256 MiB BF16 inputs against a device-to-device copy; prints a table,
// or one JSON object when json is true.
void run_bench_quant(bool json);

}  // namespace q2::cuda
