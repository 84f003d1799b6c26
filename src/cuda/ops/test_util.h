#pragma once
// Shared by the GPU model-op tests (src/cuda/ops/*_test.cpp, one program: quartet2_gpu_ops_tests):
// BF16-exact random inputs, upload and download, and the comparisons against the CPU reference
// (model/cpu_ops.h, run in float32 on the same BF16-exact inputs). Error bounds, with u = 2^-8
// the unit roundoff of BF16 (8 significant bits, round to nearest even: |bf16(x) - x| <= 2^-8 |x|):
//   - an op computing the CPU's float32 formula and rounding once to BF16: |gpu - cpu| <= u |cpu|
//     (a little more where the GPU's expf / sin / reduction order differ in the last float bit);
//   - bit-exact where the GPU performs the CPU's float operations in the CPU's order
//     (embedding, rmsnorm dw, AdamW, scaling, conversion).
// Every test skips when no CUDA device is present (REQUIRE_GPU, cuda/runtime/test_util.h).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/host_device.h"
#include "common/matrix.h"
#include "cuda/ops/ops.h"
#include "cuda/runtime/test_util.h"
#include "format/bf16_matrix.h"
#include "quant/distributions.h"

namespace q2::cuda::ops::test {

inline constexpr double kU = 1.0 / 256;  // BF16 unit roundoff

// Gaussian values rounded to BF16 (exact in float32 and in BF16).
inline Matrix random_bf16(int64_t rows, int64_t cols, uint64_t seed, double stddev = 1.0) {
  return q2::bf16::round(quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed, stddev));
}

inline std::vector<uint16_t> bits_of(const Matrix& m) {
  std::vector<uint16_t> b(m.data.size());
  for (size_t i = 0; i < b.size(); ++i) b[i] = q2::bf16::encode(m.data[i]);
  return b;
}

inline DeviceBuffer<bf16> to_dev_bf16(const Matrix& m) {
  DeviceBuffer<bf16> d(m.size());
  const std::vector<uint16_t> b = bits_of(m);
  check(cudaMemcpy(d.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice), "upload bf16");
  return d;
}

template <class T>
DeviceBuffer<T> to_dev(const std::vector<T>& v) {
  DeviceBuffer<T> d(static_cast<int64_t>(v.size()));
  check(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

inline DeviceBuffer<float> to_dev(const Matrix& m) { return to_dev(m.data); }

inline Matrix from_dev(const DeviceBuffer<bf16>& d, int64_t rows, int64_t cols) {
  std::vector<uint16_t> b(static_cast<size_t>(rows * cols));
  check(cudaMemcpy(b.data(), d.get(), b.size() * 2, cudaMemcpyDeviceToHost), "download bf16");
  Matrix m(rows, cols);
  for (size_t i = 0; i < b.size(); ++i) m.data[i] = q2::bf16::decode(b[i]);
  return m;
}

inline Matrix from_dev(const DeviceBuffer<float>& d, int64_t rows, int64_t cols) {
  Matrix m(rows, cols);
  check(cudaMemcpy(m.data.data(), d.get(), m.data.size() * 4, cudaMemcpyDeviceToHost), "download f32");
  return m;
}

// All-ones bytes: NaN in BF16 and float32, so an element the op failed to write shows up.
template <class T>
void poison(DeviceBuffer<T>& d) {
  check(cudaMemset(d.get(), 0xFF, d.bytes()), "poison");
}

inline double max_abs(const Matrix& m) {
  double r = 0;
  for (float v : m.data) r = std::max(r, std::fabs(static_cast<double>(v)));
  return r;
}

// |gpu - cpu| <= rel |cpu| + abs for every element (NaN fails); reports the first violation.
inline void expect_close(const Matrix& gpu, const Matrix& cpu, double rel, double abs, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < cpu.size(); ++i) {
    const double g = gpu.data[i], c = cpu.data[i];
    if (!(std::fabs(g - c) <= rel * std::fabs(c) + abs) && bad++ == 0)
      ADD_FAILURE() << what << ": element " << i << " (row " << i / cpu.cols << ", col " << i % cpu.cols << "): gpu "
                    << g << " vs cpu " << c << " (tolerance " << rel * std::fabs(c) + abs << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

// No element NaN or infinite.
inline void expect_finite(const Matrix& m, const std::string& what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < m.size(); ++i)
    if (!std::isfinite(m.data[i]) && bad++ == 0) ADD_FAILURE() << what << ": element " << i << " is " << m.data[i];
  EXPECT_EQ(bad, 0) << what << ": elements not finite";
}

inline void expect_bits_equal(const Matrix& gpu, const Matrix& cpu, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < cpu.size(); ++i)
    if (float_bits(gpu.data[i]) != float_bits(cpu.data[i]) && bad++ == 0)
      ADD_FAILURE() << what << ": first difference at element " << i << ": gpu " << gpu.data[i] << " vs cpu "
                    << cpu.data[i];
  EXPECT_EQ(bad, 0) << what << ": elements differ";
}

inline std::vector<uint32_t> random_ids(int64_t n, uint32_t vocab, uint64_t seed) {
  const Matrix u = quant::random_matrix(1, n, quant::Dist::kGaussian, seed);
  std::vector<uint32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[i] = static_cast<uint32_t>(static_cast<uint64_t>(std::fabs(u.data[i]) * 1e6) % vocab);
  return ids;
}

}  // namespace q2::cuda::ops::test
