// GPU embedding (embedding.cu) against the CPU reference: bit-exact, and out-of-range ids reported.
#include "cuda/ops/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/ops/test_util.h"
#include "model/cpu_ops.h"
#include "quant/distributions.h"

namespace q2::cuda::ops::test {
namespace {

using ::q2::cuda::test::expect_error;

TEST(GpuEmbedding, ForwardGathersAndRoundsRows) {
  REQUIRE_GPU();
  const int64_t vocab = 1000, d = 200, T = 3 * 128 + 7;
  const Matrix table = quant::random_matrix(vocab, d, quant::Dist::kGaussian, 1);  // float32, not BF16-exact
  const std::vector<uint32_t> ids = random_ids(T, vocab, 2);
  auto dt = to_dev(table);
  auto di = to_dev(ids);
  DeviceBuffer<bf16> out(T * d);
  poison(out);
  IdCheck ids_ok;
  embedding_forward(dt.get(), vocab, d, di.get(), T, out.get(), &ids_ok);
  ids_ok.throw_if_invalid("embedding", vocab);
  Matrix ref(T, d);
  model::cpu::embedding_forward(table, ids, ref);
  expect_bits_equal(from_dev(out, T, d), q2::bf16::round(std::move(ref)), "embedding forward");
}

TEST(GpuEmbedding, ReportsOutOfRangeIds) {
  REQUIRE_GPU();
  const int64_t vocab = 50, d = 16, T = 9;
  const Matrix table = random_bf16(vocab, d, 3);
  std::vector<uint32_t> ids = random_ids(T, vocab, 4);
  ids[5] = 50;
  auto dt = to_dev(table);
  auto di = to_dev(ids);
  DeviceBuffer<bf16> out(T * d);
  IdCheck check_ids;
  embedding_forward(dt.get(), vocab, d, di.get(), T, out.get(), &check_ids);
  expect_error([&] { check_ids.throw_if_invalid("embedding_forward", vocab); }, "token id 50 (row 5) is outside");
  const Matrix o = from_dev(out, T, d);
  EXPECT_TRUE(std::isnan(o.at(5, 0)));
  EXPECT_FALSE(std::isnan(o.at(4, 0)));
  check_ids.throw_if_invalid("cleared", vocab);  // the check resets after reporting

  DeviceBuffer<bf16> dout = to_dev_bf16(random_bf16(T, d, 5));
  DeviceBuffer<float> dtable(vocab * d);
  check(cudaMemset(dtable.get(), 0, dtable.bytes()), "memset");
  embedding_backward(dout.get(), di.get(), T, d, dtable.get(), vocab, &check_ids);
  expect_error([&] { check_ids.throw_if_invalid("embedding_backward", vocab); }, "outside the vocabulary of 50");
}

TEST(GpuEmbedding, BackwardEqualsCpuBitForBit) {
  REQUIRE_GPU();
  for (const int64_t d : {64, 1024, 37}) {
    const int64_t vocab = 300, T = 3 * 128 + 7 + 512;
    std::vector<uint32_t> ids = random_ids(T, 17, 6);  // many repeats
    for (int64_t t = 0; t < T; t += 2) ids[t] = 250;   // one run longer than the load batch
    ids[T - 1] = vocab - 1;
    const Matrix dout = random_bf16(T, d, 7);
    Matrix dtable = quant::random_matrix(vocab, d, quant::Dist::kGaussian, 8);
    auto dd = to_dev_bf16(dout);
    auto di = to_dev(ids);
    auto dt = to_dev(dtable);
    embedding_backward(dd.get(), di.get(), T, d, dt.get(), vocab);
    model::cpu::embedding_backward(dout, ids, dtable);
    expect_bits_equal(from_dev(dt, vocab, d), dtable, "embedding backward d=" + std::to_string(d));
  }
}

}  // namespace
}  // namespace q2::cuda::ops::test
