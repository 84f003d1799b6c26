// Device-side helpers for quant_test.cpp: the exhaustive check of fast_codec.h on the GPU.
#include <cuda_runtime.h>

#include "cuda/fast_codec.h"
#include "cuda/quant.h"
#include "format/e2m1.h"

namespace q2::cuda::testing {
namespace {

__global__ void fast_codec_kernel(unsigned long long* mismatches, uint32_t* first) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (1ull << 32); i += stride) {
    const float v = __uint_as_float(static_cast<uint32_t>(i));
    const E2m1Rounded f = e2m1_round_fast(v);
    const uint8_t ref = e2m1::encode_rne(v);
    bool ok = f.code == ref;
    if (v == v) ok = ok && __float_as_uint(f.mag) == __float_as_uint(fabsf(e2m1::decode(ref)));
    if (!ok) {
      ++bad;
      atomicMin(first, static_cast<uint32_t>(i));
    }
  }
  if (bad) atomicAdd(mismatches, bad);
}

}  // namespace

// Runs e2m1_round_fast against e2m1::encode_rne / decode for all 2^32 float bit patterns on
// the device; returns the number of mismatches and the smallest mismatching pattern.
unsigned long long fast_codec_mismatches(uint32_t* first_bad) {
  DeviceBuffer<unsigned long long> count(1);
  DeviceBuffer<uint32_t> first(1);
  check(cudaMemset(count.get(), 0, sizeof(unsigned long long)), "cudaMemset");
  check(cudaMemset(first.get(), 0xFF, sizeof(uint32_t)), "cudaMemset");
  fast_codec_kernel<<<4096, 256>>>(count.get(), first.get());
  check_launch("fast_codec_kernel");
  unsigned long long n = 0;
  check(cudaMemcpy(&n, count.get(), sizeof n, cudaMemcpyDeviceToHost), "cudaMemcpy");
  check(cudaMemcpy(first_bad, first.get(), sizeof *first_bad, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return n;
}

}  // namespace q2::cuda::testing
