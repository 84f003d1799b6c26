// Linear-layer benchmark (run_bench_layer): forward(keep) + backward of one CudaLinear per
// scheme, timed with CUDA events on stream 0 on random inputs: warm-ups, then 20 rounds that
// time one step of every scheme in turn (so clock drift hits all alike), median per scheme
// (`ms`); then as many rounds that time 10 steps of each scheme in a row, unsynchronized,
// per step (`ms_back_to_back`). A step timed alone after a synchronization includes the GPU
// waiting for the CPU's first launches; back to back the CPU runs ahead, as in a training loop.
// The quartet2 breakdown times each launch of its step separately (same calls as
// linear.cpp, on one stream, each the median of 20), grouped into quantization (with the BF16
// expansions the emulated GEMMs read) and GEMMs, plus reference GEMMs with a host alpha.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_layer.h"
#include "common/error.h"
#include "cuda/gemm/gemm.h"
#include "cuda/linear/linear.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/tensor.h"
#include "cuda/runtime/timing.h"
#include "linear/scheme.h"
#include "quant/philox.h"

namespace q2::cuda {
namespace {

constexpr int kWarmup = 5, kReps = 20, kBackToBack = 10;

// Uniform values in [-scale, scale): BF16 (Bf16 true) or float32.
template <bool Bf16>
__global__ void fill_kernel(void* out, int64_t n, uint64_t seed, float scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float u = static_cast<float>(philox::word(seed, philox::kData, static_cast<uint64_t>(i)) >> 8) * 0x1p-23f - 1.0f;
    if (Bf16)
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(u * scale);
    else
      static_cast<float*>(out)[i] = u * scale;
  }
}

model::Tensor random_tensor(int64_t rows, int64_t cols, model::DType dtype, uint64_t seed, float scale) {
  model::Tensor t = device_tensor(rows, cols, dtype);
  if (dtype == model::DType::kBF16)
    fill_kernel<true><<<1024, 256>>>(t.data, t.size(), seed, scale);
  else
    fill_kernel<false><<<1024, 256>>>(t.data, t.size(), seed, scale);
  check_launch("fill_kernel");
  return t;
}

struct Shape {
  int64_t m, k, n;
};

struct Timing {
  std::string scheme;
  double ms, ms_back_to_back;
};

struct Part {
  std::string group, name;
  double ms;
};

// One layer's operands at shape s: X, the float32 master W, dY, and dW to accumulate into.
struct LayerTensors {
  model::Tensor x, w, dy, dw;
  explicit LayerTensors(const Shape& s)
      : x(random_tensor(s.m, s.k, model::DType::kBF16, 1, 1.0f)),
        w(random_tensor(s.n, s.k, model::DType::kF32, 2, 1.0f / 32)),
        dy(random_tensor(s.m, s.n, model::DType::kBF16, 3, 1e-3f)),
        dw(device_tensor(s.n, s.k, model::DType::kF32)) {}
};

std::vector<Timing> time_shape(const Shape& s) {
  LayerTensors l(s);
  const model::Tensor &x = l.x, &w = l.w, &dy = l.dy;
  model::Tensor& dw = l.dw;
  const std::vector<std::string> names = {"bf16", "quartet2", "nvidia"};
  std::vector<std::unique_ptr<CudaLinear>> ops;
  for (const std::string& n : names) ops.push_back(make_cuda_linear(linear::scheme_by_name(n), n));
  uint64_t seed = 0;
  auto step = [&](size_t i) {
    ops[i]->forward(x, w, true);
    ops[i]->backward(dy, ++seed, dw);
  };
  for (size_t i = 0; i < ops.size(); ++i)
    for (int r = 0; r < kWarmup; ++r) step(i);
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<std::vector<double>> t(ops.size()), b(ops.size());
  for (int r = 0; r < kReps; ++r)
    for (size_t i = 0; i < ops.size(); ++i) t[i].push_back(event_ms([&] { step(i); }));
  // scripts/trace/timeline.py relies on this order: warm-ups, single steps, back-to-back rounds.
  for (int r = 0; r < kReps; ++r)
    for (size_t i = 0; i < ops.size(); ++i)
      b[i].push_back(event_ms([&] { for (int k = 0; k < kBackToBack; ++k) step(i); }) / kBackToBack);
  std::vector<Timing> out;
  for (size_t i = 0; i < ops.size(); ++i) out.push_back({names[i], median(t[i]), median(b[i])});
  return out;
}

// Each launch of a quartet2 step at shape s (linear.cpp's sequence, M a multiple of 128).
std::vector<Part> quartet2_breakdown(const Shape& s) {
  LayerTensors l(s);
  const model::Tensor &x = l.x, &w = l.w, &dy = l.dy;
  model::Tensor& dw = l.dw;
  auto bf = [](const model::Tensor& t) { return static_cast<__nv_bfloat16*>(t.data); };
  const BF16View xv{bf(x), s.m, s.k, "x"}, ev{bf(dy), s.m, s.n, "dy"};
  const F32View wv{static_cast<const float*>(w.data), s.n, s.k, "w"};
  Workspace ws;
  DeviceNVFP4 xq(s.m, s.k), wq(s.n, s.k), eq(s.m, s.n), wtq(s.k, s.n), etq(s.n, s.m), xtq(s.k, s.m);
  const model::Tensor deq_a = device_tensor(std::max(s.m, s.n), std::max(s.k, s.m), model::DType::kBF16);
  const model::Tensor deq_b = device_tensor(std::max(s.n, s.k), std::max(s.k, s.m), model::DType::kBF16);
  const model::Tensor y = device_tensor(s.m, s.n, model::DType::kBF16), dx = device_tensor(s.m, s.k, model::DType::kBF16);
  // The alphas of the forward, dgrad and wgrad products, from their quantizers (one generation
  // throughout: a quantizer timed alone recomputes alpha from its partner's last scale).
  DeviceBuffer<ScaleProduct> products(3);
  check(cudaMemset(products.get(), 0, products.bytes()), "cudaMemset");
  auto link = [&](int product, int side) { return AlphaLink{products.get() + product, side, 1}; };
  const quant::Rht rot(128, 5);
  auto gemm_of = [&](int product, int64_t m, int64_t n, int64_t k, void* d, blas::OutType t, bool acc,
                     bool host_alpha = false) {
    blas::Matmul p;
    p.a = bf(deq_a);
    p.b = bf(deq_b);
    p.trans_b = true;
    p.d = d;
    p.d_type = t;
    p.m = m;
    p.n = n;
    p.k = k;
    p.accumulate = acc;
    p.alpha.device = host_alpha ? nullptr : &products.get()[product].alpha;
    return [p] { blas::matmul(p); };
  };
  std::vector<std::pair<std::string, std::function<void()>>> steps = {
      {"quantize: amax + 4/6 X, expanded", [&] {
         amax_async(xv, ws);
         quantize_four_over_six_async(xv, ws.amax(), xq, 0, bf(deq_a), link(0, 0));
       }},
      {"quantize: amax + 4/6 W, expanded", [&] {
         amax_async(wv, ws);
         quantize_four_over_six_async(wv, ws.amax(), wq, 0, bf(deq_b), link(0, 1));
       }},
      {"gemm: forward", gemm_of(0, s.m, s.n, s.k, y.data, blas::OutType::kBF16, false)},
      {"quantize: ms-eden dY, expanded", [&] { quantize_ms_eden_async(ev, rot, 1, eq, ws, 0, bf(deq_a), link(1, 0)); }},
      {"quantize: requant W_q^T, expanded", [&] {
         requantize_ms_eden_transposed_async(wq, "w", rot, 2, wtq, ws, 0, bf(deq_b), link(1, 1));
       }},
      {"gemm: dgrad", gemm_of(1, s.m, s.k, s.n, dx.data, blas::OutType::kBF16, false)},
      {"quantize: ms-eden dY^T, expanded", [&] {
         quantize_ms_eden_transposed_async(ev, rot, 3, etq, ws, 0, bf(deq_a), link(2, 0));
       }},
      {"quantize: requant X_q^T, expanded", [&] {
         requantize_ms_eden_transposed_async(xq, "x", rot, 4, xtq, ws, 0, bf(deq_b), link(2, 1));
       }},
      {"gemm: wgrad (f32 +=)", gemm_of(2, s.n, s.k, s.m, dw.data, blas::OutType::kF32, true)},
  };
  // Not part of the step: its GEMMs with alpha from the host (as the bf16 scheme's), to show
  // what the device-side alpha costs.
  steps.push_back(
      {"reference: forward GEMM, host alpha", gemm_of(0, s.m, s.n, s.k, y.data, blas::OutType::kBF16, false, true)});
  steps.push_back(
      {"reference: dgrad GEMM, host alpha", gemm_of(1, s.m, s.k, s.n, dx.data, blas::OutType::kBF16, false, true)});
  steps.push_back(
      {"reference: wgrad GEMM, host alpha", gemm_of(2, s.n, s.k, s.m, dw.data, blas::OutType::kF32, true, true)});
  // Real tensor scales for alpha before the GEMMs are timed.
  for (auto& st : steps) st.second();
  std::vector<Part> parts;
  for (auto& st : steps) {
    const size_t colon = st.first.find(':');
    parts.push_back({st.first.substr(0, colon), st.first.substr(colon + 2), median_ms(st.second, kWarmup, kReps)});
  }
  return parts;
}

}  // namespace

void run_bench_layer(bool json) {
  if (!device_available()) throw Error("quartet2 bench layer: no CUDA device found");
  cudaDeviceProp prop{};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  const std::vector<Shape> shapes = {{8192, 2048, 2048}, {8192, 2048, 8192}, {8192, 8192, 2048}, {16384, 4096, 4096}};

  std::vector<std::vector<Timing>> results;
  for (const Shape& s : shapes) results.push_back(time_shape(s));
  std::vector<std::vector<Part>> parts;  // per shape, the same launches in the same order
  for (const Shape& s : shapes) parts.push_back(quartet2_breakdown(s));
  check(cudaDeviceSynchronize(), "benchmark");

  auto tflops = [](const Shape& s, double ms) { return 6.0 * s.m * s.k * s.n / (ms * 1e-3) / 1e12; };
  auto shape_str = [](const Shape& s) { return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n); };
  if (json) {
    std::printf("{\"device\": \"%s\", \"reps\": %d, \"back_to_back\": %d, \"shapes\": [", prop.name, kReps, kBackToBack);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& s = shapes[i];
      std::printf("%s{\"m\": %lld, \"k\": %lld, \"n\": %lld, \"schemes\": [", i ? ", " : "",
                  static_cast<long long>(s.m), static_cast<long long>(s.k), static_cast<long long>(s.n));
      for (size_t j = 0; j < results[i].size(); ++j) {
        const Timing& t = results[i][j];
        std::printf("%s{\"scheme\": \"%s\", \"ms\": %.4f, \"ratio_to_bf16\": %.3f, \"tflops\": %.1f, "
                    "\"ms_back_to_back\": %.4f, \"ratio_back_to_back\": %.3f}", j ? ", " : "",
                    t.scheme.c_str(), t.ms, t.ms / results[i][0].ms, tflops(s, t.ms), t.ms_back_to_back,
                    t.ms_back_to_back / results[i][0].ms_back_to_back);
      }
      std::printf("], \"quartet2_breakdown\": [");
      for (size_t j = 0; j < parts[i].size(); ++j)
        std::printf("%s{\"group\": \"%s\", \"name\": \"%s\", \"ms\": %.4f}", j ? ", " : "",
                    parts[i][j].group.c_str(), parts[i][j].name.c_str(), parts[i][j].ms);
      std::printf("]}");
    }
    std::printf("]}\n");
  }
  FILE* t = json ? stderr : stdout;
  std::fprintf(t, "device: %s; one linear layer, forward (keep) + backward, median of %d; b2b: per step of %d in a row\n",
               prop.name, kReps, kBackToBack);
  std::fprintf(t, "%-22s %-9s %9s %8s %8s %9s %8s\n", "M x K x N", "scheme", "ms", "vs bf16", "TFLOP/s", "b2b ms",
               "vs bf16");
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    for (const Timing& r : results[i])
      std::fprintf(t, "%-22s %-9s %9.3f %7.2fx %8.1f %9.3f %7.2fx\n", shape_str(s).c_str(), r.scheme.c_str(), r.ms,
                   r.ms / results[i][0].ms, tflops(s, r.ms), r.ms_back_to_back,
                   r.ms_back_to_back / results[i][0].ms_back_to_back);
  }
  std::fprintf(t, "\nquartet2 step by launch, ms (each timed alone, one stream; reference rows not summed):\n");
  std::fprintf(t, "  %-46s", "");
  for (const Shape& s : shapes) std::fprintf(t, " %16s", shape_str(s).c_str());
  std::fprintf(t, "\n");
  std::vector<std::string> groups;  // in order of first appearance
  for (size_t j = 0; j < parts[0].size(); ++j) {
    const Part& p = parts[0][j];
    std::fprintf(t, "  %-11s %-34s", p.group.c_str(), p.name.c_str());
    for (const auto& per_shape : parts) std::fprintf(t, " %16.3f", per_shape[j].ms);
    std::fprintf(t, "\n");
    if (p.group != "reference" && std::find(groups.begin(), groups.end(), p.group) == groups.end())
      groups.push_back(p.group);
  }
  auto sum = [](const std::vector<Part>& ps, const std::string& group) {
    double ms = 0;
    for (const Part& p : ps)
      if (p.group != "reference" && (group.empty() || p.group == group)) ms += p.ms;
    return ms;
  };
  for (const std::string& g : groups) {
    std::fprintf(t, "  %-46s", ("total " + g).c_str());
    for (const auto& per_shape : parts)
      std::fprintf(t, " %8.3f (%4.1f%%)", sum(per_shape, g), 100 * sum(per_shape, g) / sum(per_shape, ""));
    std::fprintf(t, "\n");
  }
  std::fprintf(t, "  %-46s", "sum");
  for (const auto& per_shape : parts) std::fprintf(t, " %16.3f", sum(per_shape, ""));
  std::fprintf(t, "\n");
}

}  // namespace q2::cuda
