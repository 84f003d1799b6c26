// Muon on the CUDA backend (cuda/muon.cpp) against the CPU reference (model/cpu_muon.cpp),
// through Backend::muon on the same weights, gradients and state: the momentum is bit-identical
// (the same float32 operations); the orthogonalization runs in BF16 GEMMs, so the update and the
// second moments are required to agree within 2e-2 relative. The first H100 run (2026-12-07)
// measured the update 2.0-2.6% (quintic) and 3.4-4.2% (Polar Express) off, failing it; whether
// that is BF16's rounding or a defect is open (a CPU reference rounding where the GPU rounds
// would tell). Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/model_backend.h"
#include "cuda/runtime/test_util.h"
#include "model/backend.h"
#include "model/muon.h"
#include "quant/distributions.h"

namespace q2::cuda {
namespace {

double rel_err(const Matrix& got, const Matrix& want, const Matrix& base) {
  double d = 0, n = 0;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double w = static_cast<double>(want.data[i]) - base.data[i], g = static_cast<double>(got.data[i]) - base.data[i];
    d += (g - w) * (g - w);
    n += w * w;
  }
  return std::sqrt(d / n);
}

struct State {
  model::Tensor w, g, m, v;
};

State upload(model::Backend& b, const Matrix& w, const Matrix& m, const Matrix& v) {
  State s{b.alloc(w.rows, w.cols, model::Role::kParam), b.alloc(w.rows, w.cols, model::Role::kParam),
          b.alloc(w.rows, w.cols, model::Role::kParam), b.alloc(1, v.cols, model::Role::kParam)};
  b.upload(w, s.w);
  b.upload(m, s.m);
  b.upload(v, s.v);
  return s;
}

TEST(GpuMuon, MatchesTheCpuReference) {
  REQUIRE_GPU();
  register_cuda_backend();
  auto cpu = model::make_cpu_backend();
  auto gpu = model::make_backend("cuda");
  struct Case {
    int64_t rows, cols;
    std::vector<int64_t> blocks;
  };
  // Wide, tall, square, and a fused q | k | v of a GQA layer; odd sizes included.
  const Case cases[] = {{192, 320, {192}}, {768, 256, {768}}, {256, 256, {256}}, {257, 129, {257}},
                        {512, 256, {256, 128, 128}}};
  for (const model::MuonOrtho o : {model::MuonOrtho::kQuintic, model::MuonOrtho::kPolarExpress})
    for (const Case& c : cases) {
      const std::string what = std::string(o == model::MuonOrtho::kQuintic ? "quintic " : "polar_express ") +
                               std::to_string(c.rows) + "x" + std::to_string(c.cols);
      const int64_t nv = model::muon_second_moment_size(c.blocks, c.cols);
      Matrix w = quant::random_matrix(c.rows, c.cols, quant::Dist::kGaussian, 1, 0.02);
      Matrix m = quant::random_matrix(c.rows, c.cols, quant::Dist::kGaussian, 2, 1e-3);
      Matrix v = quant::random_matrix(1, nv, quant::Dist::kGaussian, 3, 1e-3);
      for (float& x : v.data) x = x * x;
      State sc = upload(*cpu, w, m, v), sg = upload(*gpu, w, m, v);
      for (int t = 0; t < 3; ++t) {
        const Matrix g = quant::random_matrix(c.rows, c.cols, quant::Dist::kStudent3, 10 + t, 1e-3);
        cpu->upload(g, sc.g);
        gpu->upload(g, sg.g);
        const Matrix base = cpu->download(sc.w);
        const model::MuonHyper h{0.02, 0.9, 0.95, 0.2, o};
        cpu->muon(sc.w, sc.g, sc.m, sc.v, c.blocks, h);
        gpu->muon(sg.w, sg.g, sg.m, sg.v, c.blocks, h);
        const Matrix mc = cpu->download(sc.m), mg = gpu->download(sg.m);
        EXPECT_EQ(std::memcmp(mc.data.data(), mg.data.data(), mc.data.size() * 4), 0) << what << ": momentum differs";
        EXPECT_LT(rel_err(gpu->download(sg.w), cpu->download(sc.w), base), 2e-2) << what << " step " << t + 1;
        Matrix zero(1, nv);
        EXPECT_LT(rel_err(gpu->download(sg.v), cpu->download(sc.v), zero), 2e-2) << what << " step " << t + 1;
        // Go on from the same state, so that the differences do not compound.
        gpu->upload(cpu->download(sc.w), sg.w);
        gpu->upload(cpu->download(sc.v), sg.v);
      }
    }
}

}  // namespace
}  // namespace q2::cuda
