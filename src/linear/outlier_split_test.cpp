#include "linear/outlier_split.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error_test_util.h"
#include "format/bf16_matrix.h"
#include "linear/linear.h"
#include "linear/plan.h"
#include "quant/distributions.h"

namespace q2::linear {
namespace {

// Gaussian rows with, in some chunks, one element scaled until it holds a chosen share of the
// chunk's energy: 0.95 (above a 0.9 split), 0.85 (below it) or untouched.
struct Planted {
  Matrix m;
  std::vector<int32_t> want;  // [rows, chunks]: what a 0.9 split takes out
};

Planted planted(int64_t rows, int64_t cols, uint64_t seed) {
  Planted p{bf16::round(quant::random_matrix(rows, cols, quant::Dist::kGaussian, seed)), {}};
  const int64_t chunks = cols / 128;
  p.want.assign(static_cast<size_t>(rows * chunks), -1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < chunks; ++c) {
      const int kind = static_cast<int>((r * 7 + c * 3 + seed) % 3);
      if (kind == 2) continue;
      const double share = kind == 0 ? 0.95 : 0.85;
      const int64_t at = c * 128 + (r * 31 + c * 17) % 128;
      double rest = 0;
      for (int64_t t = c * 128; t < (c + 1) * 128; ++t)
        if (t != at) rest += static_cast<double>(p.m.at(r, t)) * p.m.at(r, t);
      p.m.at(r, at) = static_cast<float>(std::sqrt(rest * share / (1 - share)));  // float64 share as planted
      if (kind == 0) p.want[static_cast<size_t>(r * chunks + c)] = static_cast<int32_t>(at);
    }
  return p;
}

TEST(OutlierSplit, FindsTheElementsThatDominateTheirChunks) {
  const Planted p = planted(24, 512, 1);
  const Dominated d = find_dominated(p.m, 128, 0.9);
  ASSERT_EQ(d.rows, 24);
  ASSERT_EQ(d.chunks, 4);
  EXPECT_EQ(d.index, p.want);
  int taken = 0;
  for (int32_t i : d.index) taken += i >= 0;
  EXPECT_GT(taken, 10);
  // The first of equal elements; an all-zero chunk gives up nothing.
  Matrix m(2, 128);
  m.at(0, 5) = m.at(0, 9) = -3;
  const Dominated two = find_dominated(m, 128, 0.5);
  EXPECT_EQ(two.index, (std::vector<int32_t>{-1, -1}));  // each of the two holds half: not more
  m.at(0, 9) = 0;
  EXPECT_EQ(find_dominated(m, 128, 0.5).index, (std::vector<int32_t>{5, -1}));
}

TEST(OutlierSplit, RestPlusExactTermsIsTheProduct) {
  const Planted a = planted(16, 256, 2), b = planted(24, 256, 3);
  const Dominated da = find_dominated(a.m, 128, 0.9), db = find_dominated(b.m, 128, 0.9);
  const Matrix ar = without_dominated(a.m, da), br = without_dominated(b.m, db);
  // Every extracted element is zero in the rest, and nothing else changed.
  for (int64_t r = 0; r < a.m.rows; ++r)
    for (int64_t t = 0; t < a.m.cols; ++t) {
      const bool taken = da.at(r, t / 128) == t;
      EXPECT_EQ(ar.at(r, t), taken ? 0.0f : a.m.at(r, t));
    }
  // rest products (float64) + the exact terms = the whole product (float64), to float32 rounding
  // of the terms; and the terms alone carry most of the dominated rows' products.
  Matrix out(a.m.rows, b.m.rows);
  add_dominated_products(a.m, da, b.m, db, out);
  double err = 0, norm = 0;
  for (int64_t j = 0; j < a.m.rows; ++j)
    for (int64_t i = 0; i < b.m.rows; ++i) {
      double whole = 0, rest = 0;
      for (int64_t t = 0; t < a.m.cols; ++t) {
        whole += static_cast<double>(a.m.at(j, t)) * b.m.at(i, t);
        rest += static_cast<double>(ar.at(j, t)) * br.at(i, t);
      }
      err += std::pow(rest + out.at(j, i) - whole, 2);
      norm += whole * whole;
    }
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
  // out is added to, not overwritten.
  Matrix twice(a.m.rows, b.m.rows);
  add_dominated_products(a.m, da, b.m, db, twice);
  add_dominated_products(a.m, da, b.m, db, twice);
  for (int64_t k = 0; k < out.size(); ++k) EXPECT_EQ(twice.data[k], 2 * out.data[k]);
}

TEST(OutlierSplit, BadShapesAndSharesAreNamed) {
  const Matrix m(4, 200);
  EXPECT_EQ(test::error_of([&] { find_dominated(m, 128, 0.9); }),
            "outlier split: the inner size 200 is not a multiple of the chunk 128");
  EXPECT_EQ(test::error_of([&] { find_dominated(Matrix(4, 256), 256, 0.9); }),
            "outlier split: chunks of 256 elements; 16, 32, 64 or 128 are supported");
  const Matrix a(4, 128), b(3, 256);
  Dominated da = find_dominated(a, 128, 0.9), db = find_dominated(Matrix(3, 128), 128, 0.9);
  Matrix out(4, 3);
  EXPECT_NE(test::error_of([&] { add_dominated_products(a, da, b, db, out); }).find("do not match"), std::string::npos);
  for (double share : {0.4999, 1.0, -0.5})
    EXPECT_FALSE(valid_outlier_split(share)) << share;
  EXPECT_TRUE(valid_outlier_split(0.5));
  EXPECT_TRUE(valid_outlier_split(0.9));
}

TEST(OutlierSplit, PlanTakesItForWgradsWithTwoMsEdenOperands) {
  Scheme s = scheme_by_name("quartet2", 0, 0, 2);
  s.outlier_split = 0.9;
  const Plan p = make_plan(s);
  EXPECT_EQ(p.wgrad.outlier_split, 0.9);
  EXPECT_EQ(p.dgrad.outlier_split, 0);
  for (const char* name : {"sr", "nvidia", "quartet2_fwd"}) {
    Scheme bad = scheme_by_name(name);
    bad.outlier_split = 0.9;
    EXPECT_NE(test::error_of([&] { make_plan(bad); }).find("outlier_split applies to a wgrad whose two operands are MS-EDEN"),
              std::string::npos)
        << name;
  }
  s.outlier_split = 0.3;
  EXPECT_EQ(test::error_of([&] { make_plan(s); }),
            "scheme 'quartet2': outlier_split must be 0 (off) or an energy share in [0.5, 1), got 0.300000");
}

// The layer quantizes the rests and adds the terms: its wgrad operands are MS-EDEN of the rests
// (the same bits as quantizing them directly), and the trace says so.
TEST(OutlierSplit, LayerQuantizesTheRests) {
  const auto backend = gemm::make_cpu_backend();
  Scheme s = scheme_by_name("quartet2", 0, 0, 2);
  s.outlier_split = 0.9;
  const Linear layer(s, *backend, "l");
  const Matrix x_tokens = transpose(planted(64, 256, 5).m);  // planted along tokens: what wgrad splits
  const Matrix w = quant::random_matrix(128, 64, quant::Dist::kGaussian, 6, 0.125);
  const Matrix dy = transpose(planted(128, 256, 7).m);
  Saved saved;
  Trace t;
  layer.forward(x_tokens, w, saved, &t);
  const Grads g = layer.backward(dy, saved, 11, &t);
  EXPECT_EQ(t.back(), "wgrad.b(X^T): ms_eden h128x2");
  EXPECT_EQ(t[t.size() - 3], "wgrad: outlier split");
  // The same product by hand from the layer's own pieces.
  const Matrix e = layer.backward_dy(dy);
  const Matrix a = layer.backward_source(layer.plan().wgrad.a, e, saved),
               b = layer.backward_source(layer.plan().wgrad.b, e, saved);
  const Dominated da = find_dominated(a, 128, 0.9), db = find_dominated(b, 128, 0.9);
  int taken = 0;
  for (int32_t i : da.index) taken += i >= 0;
  for (int32_t i : db.index) taken += i >= 0;
  EXPECT_GT(taken, 20);
  Matrix want = backend->product_nt(layer.quantize_backward(layer.plan().wgrad.a, without_dominated(a, da), 11).view(),
                                    layer.quantize_backward(layer.plan().wgrad.b, without_dominated(b, db), 11).view(),
                                    "wgrad");
  add_dominated_products(a, da, b, db, want);
  EXPECT_EQ(g.dw.data, want.data);
}

}  // namespace
}  // namespace q2::linear
