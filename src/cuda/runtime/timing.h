#pragma once
// CUDA-event timing shared by the GPU benchmarks (all work on stream 0).
#include <functional>
#include <vector>

namespace q2::cuda {

// One run of f, timed by events recorded around it on stream 0, in milliseconds.
double event_ms(const std::function<void()>& f);
double median(std::vector<double> t);
// `warmup` untimed runs, then the median of `reps` timed ones.
double median_ms(const std::function<void()>& f, int warmup, int reps);

}  // namespace q2::cuda
