// quartet2_bench_quant [--json]: bandwidth of the GPU quantization kernels (bench_quant.cu).
#include <cstdio>
#include <cstring>
#include <exception>

#include "cuda/quant.h"

int main(int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json]\n", argv[0]);
      return 2;
    }
  }
  try {
    q2::cuda::run_bench_quant(json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quartet2_bench_quant: %s\n", e.what());
    return 1;
  }
  return 0;
}
