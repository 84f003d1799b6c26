// GPU SwiGLU (swiglu.cu) against the CPU reference, within u.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <string>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"

namespace q2::cuda::ops::test {
namespace {

TEST(GpuSwiglu, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  for (const int64_t h : {200, 37}) {
    const int64_t T = 3 * 128 + 7;
    const Matrix h12 = random_bf16(T, 2 * h, 70, 2.0), dg = random_bf16(T, h, 71);
    auto gh = to_dev_bf16(h12);
    auto gdg = to_dev_bf16(dg);
    DeviceBuffer<bf16> g(T * h), dh(T * 2 * h);
    poison(g);
    poison(dh);
    swiglu_forward(gh.get(), T, h, g.get());
    swiglu_backward(gdg.get(), gh.get(), T, h, dh.get());
    Matrix rg(T, h), rdh(T, 2 * h);
    model::cpu::swiglu_forward(h12, rg);
    model::cpu::swiglu_backward(dg, h12, rdh);
    // expf may differ from glibc's in the last bit; the backward's s + silu (1 - s) can cancel.
    expect_close(from_dev(g, T, h), rg, kU * 1.001, 1e-6 * max_abs(rg), "swiglu g h=" + std::to_string(h));
    expect_close(from_dev(dh, T, 2 * h), rdh, kU * 1.001, 1e-6 * max_abs(rdh), "swiglu dh12 h=" + std::to_string(h));
  }
}

}  // namespace
}  // namespace q2::cuda::ops::test
