#pragma once
// Shared by the GPU test programs (src/cuda/*_test.cpp, src/capi): skipping without a GPU,
// uploads, exact NVFP4 comparison, and error-message checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/host_device.h"
#include "common/matrix.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/tensor.h"
#include "format/bf16.h"
#include "format/nvfp4.h"

#define REQUIRE_GPU() \
  if (!::q2::cuda::device_available()) GTEST_SKIP() << "no CUDA device: GPU tests skipped"

namespace q2::cuda::test {

// A device tensor of m's values (BF16: rounded to nearest even).
inline model::Tensor upload(const Matrix& m, model::DType dtype) {
  model::Tensor t = device_tensor(m.rows, m.cols, dtype);
  if (dtype == model::DType::kF32) {
    check(cudaMemcpy(t.data, m.data.data(), m.data.size() * 4, cudaMemcpyHostToDevice), "upload");
  } else {
    std::vector<uint16_t> bits(m.data.size());
    for (size_t i = 0; i < bits.size(); ++i) bits[i] = bf16::encode(m.data[i]);
    check(cudaMemcpy(t.data, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), "upload");
  }
  return t;
}

// Exact equality of codes, scales and tensor scale, pointing at the first difference.
inline void expect_same(const NVFP4Tensor& gpu, const NVFP4Tensor& cpu, const std::string& what) {
  ASSERT_EQ(gpu.rows, cpu.rows) << what;
  ASSERT_EQ(gpu.cols, cpu.cols) << what;
  EXPECT_EQ(float_bits(gpu.tensor_scale), float_bits(cpu.tensor_scale))
      << what << ": tensor scale " << gpu.tensor_scale << " vs " << cpu.tensor_scale;
  int64_t bad_codes = 0, bad_scales = 0;
  for (int64_t r = 0; r < cpu.rows; ++r)
    for (int64_t c = 0; c < cpu.cols; ++c)
      if (gpu.code(r, c) != cpu.code(r, c) && bad_codes++ == 0)
        ADD_FAILURE() << what << ": first code mismatch at [" << r << ", " << c << "]: " << int(gpu.code(r, c))
                      << " vs " << int(cpu.code(r, c));
  for (int64_t r = 0; r < cpu.rows; ++r)
    for (int64_t b = 0; b < cpu.scale_cols(); ++b)
      if (gpu.scale(r, b) != cpu.scale(r, b) && bad_scales++ == 0)
        ADD_FAILURE() << what << ": first scale mismatch at [" << r << ", " << b << "]: " << int(gpu.scale(r, b))
                      << " vs " << int(cpu.scale(r, b));
  EXPECT_EQ(bad_codes, 0) << what;
  EXPECT_EQ(bad_scales, 0) << what;
}

// f() throws a q2::Error whose message contains needle.
template <class F>
void expect_error(F f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected q2::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace q2::cuda::test
