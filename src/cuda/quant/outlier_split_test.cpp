// outlier_split.cu against the CPU reference (linear/outlier_split.cpp), bit for bit: the lists
// of taken elements, the rests (BF16 values, NVFP4 codes) and the exact terms added to dW.
// Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda/quant/quant.h"
#include "cuda/quant/test_support.h"
#include "cuda/runtime/test_util.h"
#include "linear/outlier_split.h"
#include "quant/rtn.h"

namespace q2::cuda::test {
namespace {

// [rows, cols] Gaussian with whole outlier tokens (every column of token 37 + 128 k, as the
// SwiGLU products that feed w3 show; adjacent columns share NVFP4 bytes) and single dominated
// elements here and there, some near the 0.9 share.
Matrix planted(int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m = random(rows, cols, seed);
  for (int64_t t = 37; t < rows; t += 256)
    for (int64_t c = 0; c < cols; ++c) m.at(t, c) *= 40;
  for (int64_t k = 0; k < rows * cols / 300; ++k) {
    const int64_t r = (k * 7919) % rows, c = (k * 104729) % cols;
    m.at(r, c) = static_cast<float>((k % 2 ? -1 : 1) * (8 + k % 13) * std::sqrt(128.0) / 3);
  }
  return m;
}

// The lists a DeviceDominated should hold: per row, the taken indices in chunk order.
std::vector<std::vector<int32_t>> lists(const linear::Dominated& d) {
  std::vector<std::vector<int32_t>> l(static_cast<size_t>(d.rows));
  for (int64_t r = 0; r < d.rows; ++r)
    for (int64_t c = 0; c < d.chunks; ++c)
      if (d.at(r, c) >= 0) l[static_cast<size_t>(r)].push_back(d.at(r, c));
  return l;
}

std::vector<std::vector<int32_t>> lists(const DeviceDominated& d) {
  std::vector<int32_t> index(static_cast<size_t>(d.rows * d.chunks)), count(static_cast<size_t>(d.rows));
  check(cudaMemcpy(index.data(), d.index.get(), index.size() * 4, cudaMemcpyDeviceToHost), "download");
  check(cudaMemcpy(count.data(), d.count.get(), count.size() * 4, cudaMemcpyDeviceToHost), "download");
  std::vector<std::vector<int32_t>> l(static_cast<size_t>(d.rows));
  for (int64_t r = 0; r < d.rows; ++r)
    l[static_cast<size_t>(r)].assign(index.begin() + r * d.chunks, index.begin() + r * d.chunks + count[r]);
  return l;
}

Matrix download_bf16(const __nv_bfloat16* p, int64_t rows, int64_t cols) {
  std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
  check(cudaMemcpy(bits.data(), p, bits.size() * 2, cudaMemcpyDeviceToHost), "download");
  Matrix m(rows, cols);
  for (size_t i = 0; i < bits.size(); ++i) m.data[i] = bf16::decode(bits[i]);
  return m;
}

int taken(const linear::Dominated& d) {
  int n = 0;
  for (int32_t i : d.index) n += i >= 0;
  return n;
}

// In both list tests, 4224 and 5120 rows (33 and 40 chunks) take compact_dominated_kernel's warp
// past its first 32 chunks.
TEST(GpuOutlierSplit, Bf16ListsAndRestMatchCpu) {
  REQUIRE_GPU();
  for (const Shape s : std::vector<Shape>{{128, 8}, {512, 200}, {1024, 1536}, {4224, 72}})
    for (double share : {0.5, 0.9}) {
      const Bf16Tensor x = upload(planted(s.rows, s.cols, 3), "dY");
      DeviceDominated d;
      DeviceBuffer<__nv_bfloat16> rest(x.host.size());
      split_dominated_transposed_async(x.view(), share, d, rest.get());
      const Matrix xt = transpose(x.host);
      const linear::Dominated want = linear::find_dominated(xt, 128, share);
      EXPECT_GT(taken(want), 0);
      EXPECT_EQ(lists(d), lists(want)) << shape(x.host) << " share " << share;
      const Matrix got = download_bf16(rest.get(), s.rows, s.cols);
      EXPECT_EQ(got.data, transpose(linear::without_dominated(xt, want)).data) << shape(x.host);
    }
}

TEST(GpuOutlierSplit, Nvfp4ListsAndRestMatchCpu) {
  REQUIRE_GPU();
  for (const Shape s : std::vector<Shape>{{128, 32}, {512, 256}, {1024, 1536}, {5120, 64}})
    for (double share : {0.5, 0.9}) {
      NVFP4Tensor a = quant::quantize_four_over_six(MatrixRef(planted(s.rows, s.cols, 5), "X"));
      DeviceDominated d;
      DeviceNVFP4 rest;
      split_dominated_transposed_async(to_device(a), "Xq", share, d, rest);
      const linear::Dominated want = linear::find_dominated(transpose(a.dequantize()), 128, share);
      EXPECT_GT(taken(want), 0);
      EXPECT_EQ(lists(d), lists(want)) << s.rows << "x" << s.cols << " share " << share;
      const std::vector<std::vector<int32_t>> taken_lists = lists(want);
      for (int64_t c = 0; c < want.rows; ++c)
        for (int32_t t : taken_lists[static_cast<size_t>(c)]) a.set_code(t, c, 0);
      expect_same(to_host(rest), a, "rest of Xq");
    }
}

TEST(GpuOutlierSplit, ExactTermsMatchCpuBitForBit) {
  REQUIRE_GPU();
  const int64_t tokens = 1024, n = 96, k = 160;
  const Bf16Tensor dy = upload(planted(tokens, n, 7), "dY"), xb = upload(planted(tokens, k, 8), "X");
  const NVFP4Tensor xq = quant::quantize_four_over_six(MatrixRef(planted(tokens, k, 9), "X"));
  const DeviceNVFP4 dxq = to_device(xq);
  const Matrix start = random(n, k, 10);
  for (const bool fp4 : {true, false}) {
    const Matrix x = fp4 ? xq.dequantize() : xb.host;
    const Matrix a = transpose(dy.host), b = transpose(x);
    const linear::Dominated da = linear::find_dominated(a, 128, 0.9), db = linear::find_dominated(b, 128, 0.9);
    Matrix want = start;
    linear::add_dominated_products(a, da, b, db, want);
    DeviceDominated ga, gb;
    DeviceBuffer<__nv_bfloat16> rest_a(dy.host.size()), rest_b(xb.host.size());
    DeviceNVFP4 rest_q;
    split_dominated_transposed_async(dy.view(), 0.9, ga, rest_a.get());
    if (fp4)
      split_dominated_transposed_async(dxq, "Xq", 0.9, gb, rest_q);
    else
      split_dominated_transposed_async(xb.view(), 0.9, gb, rest_b.get());
    DeviceBuffer<float> out(start.size());
    check(cudaMemcpy(out.get(), start.data.data(), start.size() * 4, cudaMemcpyHostToDevice), "upload");
    if (fp4)
      add_dominated_products_async(dy.view(), ga, dxq, gb, out.get());
    else
      add_dominated_products_async(dy.view(), ga, xb.view(), gb, out.get());
    Matrix got(n, k);
    check(cudaMemcpy(got.data.data(), out.get(), got.size() * 4, cudaMemcpyDeviceToHost), "download");
    int changed = 0;
    for (int64_t i = 0; i < got.size(); ++i) {
      uint32_t g, w;
      std::memcpy(&g, &got.data[i], 4);
      std::memcpy(&w, &want.data[i], 4);
      EXPECT_EQ(g, w) << (fp4 ? "NVFP4" : "BF16") << " X, element " << i;
      changed += want.data[i] != start.data[i];
    }
    EXPECT_GT(changed, n * k / 4);
  }
}

}  // namespace
}  // namespace q2::cuda::test
