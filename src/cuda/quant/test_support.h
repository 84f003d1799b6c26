#pragma once
// Shared by the GPU quantizer tests (src/cuda/quant/*_test.cpp, one program, quartet2_gpu_tests):
// BF16 test tensors on host and device, the input shapes and distributions every kernel is
// checked on, the comparison of a BF16 expansion with the CPU's unscaled dequantization, and
// the exhaustive device-side checks of fast_codec.h defined in test_support.cu. Skipping
// without a GPU, exact NVFP4 comparison and error checks: cuda/runtime/test_util.h.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/matrix.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/format.h"
#include "quant/distributions.h"
#include "format/bf16.h"
#include "format/nvfp4.h"

namespace q2::cuda {

// Defined in test_support.cu: mismatch counts of the exhaustive fast-codec checks.
namespace testing {
unsigned long long e2m1_codec_mismatches(uint32_t* first_bad);
unsigned long long quotient_mismatches(uint32_t* first_bad);
unsigned long long expansion_mismatches(uint32_t* first_bad);
unsigned long long e4m3_codec_mismatches(uint32_t* first_bad);
unsigned long long e4m3_sr_mismatches(uint32_t* first_bad);
}

namespace test {

// A BF16 tensor on the host (exact floats) and on the device.
struct Bf16Tensor {
  Matrix host;  // float(bf16) values: the CPU reference's input
  DeviceBuffer<__nv_bfloat16> dev;
  std::string name;

  BF16View view() const { return BF16View{dev.get(), host.rows, host.cols, name}; }
};

inline Bf16Tensor upload(const Matrix& values, const std::string& name) {
  Bf16Tensor t{Matrix(values.rows, values.cols), DeviceBuffer<__nv_bfloat16>(values.size()), name};
  std::vector<uint16_t> bits(static_cast<size_t>(values.size()));
  for (size_t i = 0; i < bits.size(); ++i) {
    bits[i] = bf16::encode(values.data[i]);
    t.host.data[i] = bf16::decode(bits[i]);
  }
  check(cudaMemcpy(t.dev.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), "upload");
  return t;
}

inline Matrix random(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0,
                     quant::Dist dist = quant::Dist::kGaussian) {
  return quant::random_matrix(rows, cols, dist, seed, scale);
}

inline std::string shape(const Matrix& m) {
  std::string s = "[";
  s += std::to_string(m.rows);
  s += ", ";
  s += std::to_string(m.cols);
  s += "]";
  return s;
}

struct Shape {
  int64_t rows, cols;
};
inline const std::vector<Shape> kShapes = {{1, 16}, {3, 48}, {384, 256}, {640, 1024}, {130, 80}, {4096, 4096}};
inline const std::vector<Shape> kEdenShapes = {{1, 128}, {7, 384}, {384, 256}, {640, 1024}, {4096, 4096}};

// Inputs: Gaussian, heavy-tailed, huge (bf16 range), tiny (subnormal scales), zeros.
// `huge` stays where a 128-point rotation of Gaussian data cannot overflow float32 (its
// unnormalized sums reach ~50 sigma) for the MS-EDEN family.
inline std::vector<std::pair<std::string, Matrix>> inputs(int64_t rows, int64_t cols, uint64_t seed,
                                                          double huge = 1e37) {
  std::vector<std::pair<std::string, Matrix>> v;
  v.emplace_back("gaussian", random(rows, cols, seed));
  v.emplace_back("student3", random(rows, cols, seed + 1, 3.0, quant::Dist::kStudent3));
  v.emplace_back("huge", random(rows, cols, seed + 2, huge));
  v.emplace_back("tiny", random(rows, cols, seed + 3, 1e-30));
  v.emplace_back("zeros", Matrix(rows, cols));
  return v;
}

// `got` (device, ref.rows * ref.cols BF16) is the CPU reference's unscaled dequantization of
// ref, bit for bit: the expansion a quantizer writes beside its codes for the emulated GEMM.
inline void expect_expansion(const NVFP4Tensor& ref, const DeviceBuffer<__nv_bfloat16>& got,
                             const std::string& what) {
  std::vector<uint16_t> bits(static_cast<size_t>(ref.rows * ref.cols));
  check(cudaMemcpy(bits.data(), got.get(), bits.size() * 2, cudaMemcpyDeviceToHost), "download");
  std::vector<float> row(static_cast<size_t>(ref.cols));
  int64_t bad = 0;
  for (int64_t r = 0; r < ref.rows; ++r) {
    ref.dequantize_row_unscaled(r, row.data());
    for (int64_t c = 0; c < ref.cols; ++c)
      if (bits[static_cast<size_t>(r * ref.cols + c)] != bf16::encode(row[static_cast<size_t>(c)]) && bad++ == 0)
        ADD_FAILURE() << what << ": first expansion mismatch at (" << r << ", " << c << ")";
  }
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace test
}  // namespace q2::cuda
