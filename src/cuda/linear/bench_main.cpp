// quartet2_bench_layer [--json]: linear-layer forward + backward times (bench_layer.cu).
#include <cstdio>
#include <cstring>
#include <exception>

#include "cuda/linear/bench_layer.h"

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
    q2::cuda::run_bench_layer(json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quartet2_bench_layer: %s\n", e.what());
    return 1;
  }
  return 0;
}
