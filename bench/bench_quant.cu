// Bandwidth benchmark of the GPU quantization kernels (run_bench_quant): each kernel on a
// 256 MiB BF16 tensor (8192 x 16384), timed with CUDA events (3 warm-ups, median of 25 runs),
// reported as bytes read + written per second and as a fraction of a device-to-device
// cudaMemcpy of a 256 MiB buffer timed in the same run (also counting read + write).
// Bytes are what each launch really moves, scratch included (MS-EDEN: 4 bytes of float32
// corrected scale per 16-group written by pass 1 and read by pass 2). The outlier split's rows
// view the same bytes as 65536 tokens x 2048 features.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_quant.h"
#include "common/error.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/timing.h"
#include "format/bf16.h"
#include "quant/philox.h"
#include "quant/sr.h"

namespace q2::cuda {
namespace {

__global__ void fill_kernel(uint32_t* out, int64_t n_pairs, uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_pairs; i += stride) {
    const philox::Block w = philox::words4(seed, philox::kData, static_cast<uint64_t>(i));
    // Sum of two uniforms on [-2, 2): a cheap bell-shaped value, exact in BF16 after rounding.
    const float a = (static_cast<float>(w.v[0] >> 8) * 0x1p-24f - 0.5f) * 4.0f +
                    (static_cast<float>(w.v[1] >> 8) * 0x1p-24f - 0.5f) * 4.0f;
    const float b = (static_cast<float>(w.v[2] >> 8) * 0x1p-24f - 0.5f) * 4.0f +
                    (static_cast<float>(w.v[3] >> 8) * 0x1p-24f - 0.5f) * 4.0f;
    out[i] = static_cast<uint32_t>(bf16::encode(a)) | (static_cast<uint32_t>(bf16::encode(b)) << 16);
  }
}

// Scales every feature of the tokens t % every == 37 by `by` (rows of a [tokens, cols] BF16 tensor).
__global__ void plant_outlier_tokens_kernel(__nv_bfloat16* x, int64_t tokens, int64_t cols, int64_t every, float by) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x, n = tokens / every * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    __nv_bfloat16& v = x[(i / cols * every + 37) * cols + i % cols];
    v = __float2bfloat16(__bfloat162float(v) * by);
  }
}

// 3 warm-ups, median of 25.
double median_ms_25(const std::function<void()>& f) { return median_ms(f, 3, 25); }

struct Result {
  std::string name;
  double ms, bytes;
};

}  // namespace

void run_bench_quant(bool json) {
  if (!device_available()) throw Error("quartet2 bench quant: no CUDA device found");
  const int64_t R = 8192, C = 16384, N = R * C;  // 256 MiB of BF16
  const double n = static_cast<double>(N);
  cudaDeviceProp prop{};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");

  DeviceBuffer<__nv_bfloat16> x(N), y(N);
  fill_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t*>(x.get()), N / 2, 42);
  check_launch("fill_kernel");
  check(cudaDeviceSynchronize(), "fill");
  const BF16View xv{x.get(), R, C, "bench input"};
  Workspace ws;
  DeviceNVFP4 q(R, C), q46(R, C), eden(R, C), eden_t(C, R);
  amax(xv, ws);  // also checks the input is finite
  const quant::Rht rot(128, 7);

  std::vector<Result> res;
  const double copy_ms = median_ms_25([&] {
    check(cudaMemcpyAsync(y.get(), x.get(), x.bytes(), cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
  });
  const Result copy{"memcpy D2D (256 MiB)", copy_ms, 2.0 * x.bytes()};
  const double nvfp4_bytes = n / 2 + n / 16 + 4;  // codes + scales + tensor scale
  res.push_back({"amax", median_ms_25([&] { amax_async(xv, ws); }), 2 * n});
  res.push_back({"rtn 1x16", median_ms_25([&] { quantize_rtn_async(xv, ws.amax(), {}, q); }), 2 * n + nvfp4_bytes});
  res.push_back({"four-over-six 1x16", median_ms_25([&] { quantize_four_over_six_async(xv, ws.amax(), q46); }),
                 2 * n + nvfp4_bytes});
  res.push_back({"sr 1x16", median_ms_25([&] { quantize_sr_async(xv, ws.amax(), quant::kSrScaleOverride, 1, q); }),
                 2 * n + nvfp4_bytes});
  res.push_back({"rtn 16x16", median_ms_25([&] { quantize_rtn_16x16_async(xv, ws.amax(), 447.99f, q); }),
                 2 * n + nvfp4_bytes});
  res.push_back({"dequant -> bf16", median_ms_25([&] { dequantize_async(q46, y.get()); }), nvfp4_bytes + 2 * n});
  const double pass2 = 4 * n / 16 + n / 16;  // scratch read + scales written
  res.push_back({"ms-eden (rht128, 2 passes)", median_ms_25([&] { quantize_ms_eden_async(xv, rot, 3, eden, ws); }),
                 2 * n + n / 2 + 4 * n / 16 + pass2});
  res.push_back({"ms-eden transposed",
                 median_ms_25([&] { quantize_ms_eden_transposed_async(xv, rot, 3, eden_t, ws); }),
                 2 * n + n / 2 + 4 * n / 16 + pass2});
  res.push_back({"requant nvfp4 -> ms-eden^T",
                 median_ms_25([&] { requantize_ms_eden_transposed_async(q46, "bench", rot, 3, eden_t, ws); }),
                 nvfp4_bytes + n / 2 + 4 * n / 16 + pass2});

  // The outlier split (wgrad's operands along tokens) at a training shape: the same 256 MiB as
  // 65536 tokens x 2048 features, one token in 1024 at 40x (its chunk dominated in every
  // column: 1 in 8 chunks). Find, copy and compact of a BF16 dY and of an NVFP4 X_q, then the
  // exact terms of their product (every dW element read and written: 8 bytes each).
  const int64_t T = 65536, F = N / T;
  DeviceBuffer<__nv_bfloat16> tall(N), tall_rest(N);
  check(cudaMemcpy(tall.get(), x.get(), x.bytes(), cudaMemcpyDeviceToDevice), "copy (tall)");
  plant_outlier_tokens_kernel<<<1024, 256>>>(tall.get(), T, F, 1024, 40.0f);
  check_launch("plant_outlier_tokens_kernel");
  const BF16View tv{tall.get(), T, F, "bench tokens x features"};
  Workspace tws;
  amax(tv, tws);
  DeviceNVFP4 tq(T, F), tq_rest;
  quantize_four_over_six_async(tv, tws.amax(), tq);
  DeviceDominated d_dy, d_x;
  DeviceBuffer<float> dw(F * F);
  res.push_back({"outlier split, bf16", median_ms_25([&] {
                   split_dominated_transposed_async(tv, 0.5, d_dy, tall_rest.get());
                 }),
                 2 * n + 4 * n});  // find reads, the rest's copy reads and writes
  res.push_back({"outlier split, nvfp4",
                 median_ms_25([&] { split_dominated_transposed_async(tq, "bench", 0.5, d_x, tq_rest); }),
                 3 * nvfp4_bytes});  // the same element count: find reads, the copy reads and writes
  res.push_back({"outlier split, exact terms",
                 median_ms_25([&] { add_dominated_products_async(tv, d_dy, tq, d_x, dw.get()); }),
                 8.0 * static_cast<double>(F * F)});
  check(cudaDeviceSynchronize(), "benchmark");
  ws.throw_if_nonfinite("bench input", 0);

  const double copy_gbps = copy.bytes / copy.ms / 1e6;
  if (json) {
    std::printf("{\"device\": \"%s\", \"shape\": [%lld, %lld], \"reps\": 25, \"copy\": {\"ms\": %.4f, \"bytes\": %.0f, "
                "\"gbps\": %.1f}, \"kernels\": [",
                prop.name, static_cast<long long>(R), static_cast<long long>(C), copy.ms, copy.bytes, copy_gbps);
    for (size_t i = 0; i < res.size(); ++i) {
      const double gbps = res[i].bytes / res[i].ms / 1e6;
      std::printf("%s{\"name\": \"%s\", \"ms\": %.4f, \"bytes\": %.0f, \"gbps\": %.1f, \"ratio_to_copy\": %.3f}",
                  i ? ", " : "", res[i].name.c_str(), res[i].ms, res[i].bytes, gbps, gbps / copy_gbps);
    }
    std::printf("]}\n");
  }
  // The table goes to stderr beside the JSON, so one run gives both.
  FILE* t = json ? stderr : stdout;
  std::fprintf(t, "device: %s, input BF16 [%lld, %lld] (256 MiB), median of 25\n", prop.name,
               static_cast<long long>(R), static_cast<long long>(C));
  std::fprintf(t, "%-30s %9s %10s %9s %8s\n", "kernel", "ms", "MB moved", "GB/s", "vs copy");
  std::fprintf(t, "%-30s %9.3f %10.1f %9.1f %7.1f%%\n", copy.name.c_str(), copy.ms, copy.bytes / 1e6, copy_gbps, 100.0);
  for (const Result& r : res) {
    const double gbps = r.bytes / r.ms / 1e6;
    std::fprintf(t, "%-30s %9.3f %10.1f %9.1f %7.1f%%\n", r.name.c_str(), r.ms, r.bytes / 1e6, gbps,
                 100.0 * gbps / copy_gbps);
  }
}

}  // namespace q2::cuda
