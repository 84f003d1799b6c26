#pragma once
// Muon (MomentUm Orthogonalized by Newton-Schulz), as nanochat runs it (karpathy/nanochat,
// nanochat/muon.py, muon_step_fused, at commit f5425245f99e), on one logical matrix: a
// gradient G [R, C], float32 weights W, momentum M [R, C] and factored second moments V (R
// values, one per row, when R >= C; else C values, one per column):
//
//   momentum     M <- M + (1 - mu) (G - M)                          (torch's lerp)
//   Nesterov     U  = G + mu (M - G)
//   orthogonal   X  = U / (s ||U||_F + eps); then per step (a, b, c) of the iteration:
//                A = X X^T, B = b A + c A A, X <- a X + B X,
//                on the short side (X^T when R > C, so A is min(R, C) square)
//   variance     r_i = mean of X^2 along the long side (per row when R >= C, else per column),
//                V <- V + (1 - beta2) (r - V), d_i = 1 / sqrt(max(V_i, 1e-10)),
//                X <- X d_i (sqrt(sum r_i n) / max(sqrt(sum r_i d_i^2 n), 1e-10)), with n the
//                length reduced over: the factor keeps ||X||_F and evens its rows (columns)
//   update       lr' = lr sqrt(max(1, R / C)); W <- W - (lr' X + lr' wd W [X W >= 0])
//                (cautious weight decay: only where the update and the weight agree in sign)
//
// The orthogonalization runs 5 steps of one of two iterations (MuonOrtho):
//   kQuintic       Keller Jordan's quintic Newton-Schulz (modded-nanogpt's
//                  zeropower_via_newtonschulz5): (a, b, c) = (3.4445, -4.7750, 2.0315) every
//                  step, s = 1, eps = 1e-7. Singular values of U above 0.002 ||U||_F land in
//                  [0.68, 1.20], the polynomial's values at its two critical points.
//   kPolarExpress  the Polar Express coefficients (arXiv 2505.16932; num_iters 5, safety 2e-2,
//                  cushion 2) that nanochat's muon.py uses at that commit, one triple per step,
//                  s = 1.02, eps = 1e-6. Singular values above 0.002 ||U||_F land in
//                  [0.86, 1.14] (model/cpu_muon_test.cpp computes both bands).
// The CPU backend runs it in float32 (model/cpu_muon.h), the CUDA backend with BF16 GEMMs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/backend.h"

namespace q2::model {

struct NsStep {
  double a, b, c;
};

inline constexpr int kMuonSteps = 5;
inline constexpr NsStep kQuinticStep{3.4445, -4.7750, 2.0315};
inline constexpr NsStep kPolarExpressSteps[kMuonSteps] = {
    {8.156554524902461, -22.48329292557795, 15.878769915207462},
    {4.042929935166739, -2.808917465908714, 0.5000178451051316},
    {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
    {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
    {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
};

// Step i's coefficients (0 <= i < kMuonSteps).
inline NsStep ns_step(MuonOrtho o, int i) { return o == MuonOrtho::kQuintic ? kQuinticStep : kPolarExpressSteps[i]; }
// X = U / (norm_scale ||U||_F + norm_eps) before the first step.
inline double ns_norm_scale(MuonOrtho o) { return o == MuonOrtho::kQuintic ? 1.0 : 1.02; }
inline double ns_norm_eps(MuonOrtho o) { return o == MuonOrtho::kQuintic ? 1e-7 : 1e-6; }

inline constexpr double kMuonVarianceFloor = 1e-10;  // nanochat's clamp_min of V and of the norm

// The factored second moment of one [rows, cols] block: one value per row when rows >= cols
// (the mean runs along each row), else one per column.
inline bool muon_per_row(int64_t rows, int64_t cols) { return rows >= cols; }
inline int64_t muon_second_moment_size(int64_t rows, int64_t cols) { return muon_per_row(rows, cols) ? rows : cols; }
inline int64_t muon_second_moment_size(const std::vector<int64_t>& blocks, int64_t cols) {
  int64_t n = 0;
  for (const int64_t r : blocks) n += muon_second_moment_size(r, cols);
  return n;
}
// nanochat's per-matrix learning-rate factor: sqrt(max(1, rows / cols)).
inline double muon_lr_scale(int64_t rows, int64_t cols) {
  return std::sqrt(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols)));
}

// Backend::muon's arguments: blocks of at least one row that sum to w's rows, g and m shaped as
// w, v [1, muon_second_moment_size(blocks, cols)]. Throws an Error naming what disagrees.
inline void check_muon_shapes(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                              const std::vector<int64_t>& blocks) {
  int64_t rows = 0;
  for (const int64_t r : blocks) {
    if (r < 1) throw Error("muon: a block of " + std::to_string(r) + " rows");
    rows += r;
  }
  const auto shape = [](const Tensor& t) { return "[" + std::to_string(t.rows) + ", " + std::to_string(t.cols) + "]"; };
  if (rows != w.rows) throw Error("muon: blocks of " + std::to_string(rows) + " rows in all for a weight " + shape(w));
  if (g.rows != w.rows || g.cols != w.cols || m.rows != w.rows || m.cols != w.cols)
    throw Error("muon: weight " + shape(w) + ", gradient " + shape(g) + " and momentum " + shape(m) + " differ");
  if (v.rows != 1 || v.cols != muon_second_moment_size(blocks, w.cols))
    throw Error("muon: second moments " + shape(v) + ", expected [1, " +
                std::to_string(muon_second_moment_size(blocks, w.cols)) + "]");
}

// Checks Backend::muon's arguments, then calls step(offset, moment, rows) for each block: its
// first element in w, g and m, its first second moment in v, and its row count.
template <class F>
void for_each_muon_block(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                         const std::vector<int64_t>& blocks, F&& step) {
  check_muon_shapes(w, g, m, v, blocks);
  int64_t row = 0, moment = 0;
  for (const int64_t rows : blocks) {
    step(row * w.cols, moment, rows);
    row += rows;
    moment += muon_second_moment_size(rows, w.cols);
  }
}

// "quintic" / "polar_express" (the train.muon_ns values); false for any other text.
inline bool muon_ortho_from_name(const std::string& name, MuonOrtho* out) {
  if (name == "quintic") *out = MuonOrtho::kQuintic;
  else if (name == "polar_express") *out = MuonOrtho::kPolarExpress;
  else return false;
  return true;
}

}  // namespace q2::model
