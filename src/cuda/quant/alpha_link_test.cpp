// AlphaLink (quant.h): two linked quantizers (Four-over-Six and MS-EDEN) compute their GEMM's
// alpha = t_a t_b themselves, on one stream or two. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/host_device.h"
#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"

namespace q2::cuda::test {
namespace {

// Linked quantizers compute their product's alpha = t_a t_b, whichever finishes second, and a
// pair left half done (one quantizer only) does not confuse the next pair.
TEST(GpuAlphaLink, SecondQuantizerWritesTheProductOfBothTensorScales) {
  REQUIRE_GPU();
  Workspace ws;
  DeviceBuffer<ScaleProduct> product(1);
  check(cudaMemset(product.get(), 0, product.bytes()), "cudaMemset");
  const quant::Rht r(128, 3);
  DeviceNVFP4 a, b;
  uint32_t generation = 0;
  for (int round = 0; round < 4; ++round) {
    const Bf16Tensor x = upload(random(256, 256, 40 + round, std::ldexp(1.0, 3 * round - 4)), "X");
    const Bf16Tensor e = upload(random(256, 256, 50 + round, std::ldexp(1.0, -2 * round)), "E");
    auto run_a = [&](AlphaLink link) {
      amax_async(x.view(), ws);
      quantize_four_over_six_async(x.view(), ws.amax(), a, 0, nullptr, link);
    };
    if (round == 2) run_a(AlphaLink{product.get(), 0, ++generation});  // its partner never runs
    ++generation;
    auto run_b = [&] {
      quantize_ms_eden_async(e.view(), r, 7, b, ws, 0, nullptr, AlphaLink{product.get(), 1, generation});
    };
    if (round % 2) {
      run_b();
      run_a(AlphaLink{product.get(), 0, generation});
    } else {
      run_a(AlphaLink{product.get(), 0, generation});
      run_b();
    }
    ScaleProduct got{};
    check(cudaMemcpy(&got, product.get(), sizeof got, cudaMemcpyDeviceToHost), "reading the product");
    const float ta = to_host(a).tensor_scale, tb = to_host(b).tensor_scale;
    EXPECT_EQ(float_bits(got.alpha), float_bits(ta * tb)) << "round " << round;
  }
}

// The same with the two quantizers on two streams, where they overlap and either may finish
// second: many pairs in a row, each checked.
TEST(GpuAlphaLink, QuantizersOnTwoStreams) {
  REQUIRE_GPU();
  Workspace wa, wb;  // one per stream
  DeviceBuffer<ScaleProduct> product(1);
  check(cudaMemset(product.get(), 0, product.bytes()), "cudaMemset");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cudaStream_t sa = nullptr, sb = nullptr;
  cudaEvent_t go = nullptr;
  check(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaStreamCreateWithFlags(&sb, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaEventCreateWithFlags(&go, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  const quant::Rht r(128, 3);
  DeviceNVFP4 a(2048, 2048), b(2048, 2048);
  const Bf16Tensor x[2] = {upload(random(2048, 2048, 70), "X"), upload(random(2048, 2048, 71, 1e3), "X")};
  const Bf16Tensor e[2] = {upload(random(2048, 2048, 72, 1e-3), "E"), upload(random(2048, 2048, 73), "E")};
  for (uint32_t generation = 1; generation <= 16; ++generation) {
    const BF16View xv = x[generation % 2].view(), ev = e[generation / 2 % 2].view();
    check(cudaEventRecord(go, 0), "cudaEventRecord");
    check(cudaStreamWaitEvent(sa, go, 0), "cudaStreamWaitEvent");
    check(cudaStreamWaitEvent(sb, go, 0), "cudaStreamWaitEvent");
    amax_async(xv, wa, sa);
    quantize_four_over_six_async(xv, wa.amax(), a, sa, nullptr, AlphaLink{product.get(), 0, generation});
    quantize_ms_eden_async(ev, r, generation, b, wb, sb, nullptr, AlphaLink{product.get(), 1, generation});
    check(cudaStreamSynchronize(sa), "cudaStreamSynchronize");
    check(cudaStreamSynchronize(sb), "cudaStreamSynchronize");
    ScaleProduct got{};
    check(cudaMemcpy(&got, product.get(), sizeof got, cudaMemcpyDeviceToHost), "reading the product");
    const float ta = to_host(a).tensor_scale, tb = to_host(b).tensor_scale;
    EXPECT_EQ(float_bits(got.alpha), float_bits(ta * tb)) << "pair " << generation;
  }
  cudaEventDestroy(go);
  cudaStreamDestroy(sb);
  cudaStreamDestroy(sa);
}

}  // namespace
}  // namespace q2::cuda::test
