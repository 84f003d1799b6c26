// CPU quantizer throughput on a 4096x4096 float32 tensor. Run single-threaded with
// OMP_NUM_THREADS=1 to measure the one-core figure.
#include <benchmark/benchmark.h>

#include "quant/distributions.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace {

const q2::Matrix& input() {
  static const q2::Matrix x = q2::quant::random_matrix(4096, 4096, q2::quant::Dist::kGaussian, 0);
  return x;
}

template <class F>
void run(benchmark::State& st, F f) {
  const q2::MatrixRef x(input(), "x");
  for (auto _ : st) benchmark::DoNotOptimize(f(x));
  st.SetBytesProcessed(st.iterations() * input().size() * static_cast<int64_t>(sizeof(float)));
}

void BM_Rtn(benchmark::State& st) { run(st, [](const q2::MatrixRef& x) { return q2::quant::quantize_rtn(x); }); }
void BM_FourOverSix(benchmark::State& st) {
  run(st, [](const q2::MatrixRef& x) { return q2::quant::quantize_four_over_six(x); });
}
void BM_Sr(benchmark::State& st) {
  run(st, [](const q2::MatrixRef& x) { return q2::quant::quantize_sr(x, q2::quant::kSrScaleOverride, 1); });
}
void BM_MsEden128(benchmark::State& st) {
  run(st, [](const q2::MatrixRef& x) { return q2::quant::quantize_ms_eden(x, q2::quant::Rht(128, 1), 2); });
}

}  // namespace

BENCHMARK(BM_Rtn)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FourOverSix)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sr)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MsEden128)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
