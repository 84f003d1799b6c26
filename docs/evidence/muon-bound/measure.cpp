// Issue 19's measurement (not built by CMake): GpuMuon.MatchesTheCpuReference's inputs (shapes,
// seeds, hyperparameters, 3 steps from the kBf16 reference's state) through the kBf16 and kF32
// CPU references, a float64 reference, other BF16-rounding implementations ("v:": the same
// rounding places, another accumulation) and injected faults ("b:"). Per step and
// implementation: the update's distance from kBf16's, kF32's and float64's (as the GPU test's
// rel_err), those distances over kBf16's (ratio32, ratio64), and the second moments' distance
// from kBf16's and float64's (vV16, vV64). Build from the repository root after building
// quartet2_core in build/:
//   g++ -O3 -march=native -std=c++20 -fopenmp -Isrc -Iinclude -I/usr/include/x86_64-linux-gnu/openblas-openmp \
//     docs/evidence/muon-bound/measure.cpp build/libquartet2_core.a -lopenblas -o /tmp/measure
//   OMP_NUM_THREADS=1 /tmp/measure full > docs/evidence/muon-bound/measure.txt
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "format/bf16.h"
#include "model/cpu_muon.h"
#include "model/muon.h"
#include "quant/distributions.h"

using namespace q2;
using model::MuonOrtho;

// ---------- generic matrix in double storage ----------
struct D {
  int64_t r = 0, c = 0;
  std::vector<double> a;
  D() = default;
  D(int64_t r_, int64_t c_) : r(r_), c(c_), a(static_cast<size_t>(r_ * c_)) {}
  double& at(int64_t i, int64_t j) { return a[i * c + j]; }
  double at(int64_t i, int64_t j) const { return a[i * c + j]; }
};
D tr(const D& x) {
  D t(x.c, x.r);
  for (int64_t i = 0; i < x.r; ++i)
    for (int64_t j = 0; j < x.c; ++j) t.at(j, i) = x.at(i, j);
  return t;
}

enum Acc { kF64, kF32Fwd, kF32Rev, kF32Split, kBf16Split, kExact64, kTC24, kTC27, kTC20 };
int g_tc_block = 16;

// Tensor-core-like inner product: blocks of g_tc_block exact products plus the accumulator,
// aligned to the largest exponent with `bits` significant bits (truncated), sum truncated to float.
float rz(double s) {
  float f = static_cast<float>(s);
  if (std::fabs(static_cast<double>(f)) > std::fabs(s)) f = std::nextafter(f, 0.0f);
  return f;
}
double tc_dot(const double* x, const double* y, int64_t K, int bits) {
  float acc = 0;
  double t[64];
  for (int64_t k0 = 0; k0 < K; k0 += g_tc_block) {
    const int64_t n = std::min<int64_t>(g_tc_block, K - k0);
    int emax = -10000;
    int e;
    if (acc != 0) { std::frexp(acc, &e); emax = e; }
    for (int64_t k = 0; k < n; ++k) {
      t[k] = x[k0 + k] * y[k0 + k];
      if (t[k] != 0) { std::frexp(t[k], &e); emax = std::max(emax, e); }
    }
    if (emax == -10000) continue;
    const double q = std::ldexp(1.0, emax - bits);
    double s = std::trunc(acc / q) * q;
    for (int64_t k = 0; k < n; ++k) s += std::trunc(t[k] / q) * q;
    acc = rz(s);
  }
  return acc;
}

// z = x y with accumulation acc: the raw product in double (float-valued for float modes).
D mul(const D& x, const D& y, Acc acc) {
  D z(x.r, y.c);
  const int64_t K = x.c, N = y.c;
  std::vector<float> f(N), part(N);
  std::vector<double> d(N);
  if (acc == kTC24 || acc == kTC27 || acc == kTC20) {
    const int bits = acc == kTC24 ? 24 : acc == kTC27 ? 27 : 20;
    const D yt = tr(y);
    for (int64_t i = 0; i < x.r; ++i)
      for (int64_t j = 0; j < N; ++j) z.at(i, j) = tc_dot(&x.a[i * K], &yt.a[j * K], K, bits);
    return z;
  }
  for (int64_t i = 0; i < x.r; ++i) {
    if (acc == kF64 || acc == kExact64) {
      std::fill(d.begin(), d.end(), 0.0);
      for (int64_t k = 0; k < K; ++k) {
        const double s = x.at(i, k);
        const double* yr = &y.a[k * N];
        for (int64_t j = 0; j < N; ++j) d[j] += s * yr[j];
      }
      for (int64_t j = 0; j < N; ++j) z.at(i, j) = d[j];
    } else if (acc == kF32Fwd || acc == kF32Rev) {
      std::fill(f.begin(), f.end(), 0.0f);
      for (int64_t kk = 0; kk < K; ++kk) {
        const int64_t k = acc == kF32Fwd ? kk : K - 1 - kk;
        const float s = static_cast<float>(x.at(i, k));
        const double* yr = &y.a[k * N];
        for (int64_t j = 0; j < N; ++j) f[j] = std::fma(s, static_cast<float>(yr[j]), f[j]);
      }
      for (int64_t j = 0; j < N; ++j) z.at(i, j) = f[j];
    } else {  // split-K: chunks of 64 in float, partials combined (in float, or rounded to BF16)
      std::fill(f.begin(), f.end(), 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += 64) {
        std::fill(part.begin(), part.end(), 0.0f);
        for (int64_t k = k0; k < std::min(K, k0 + 64); ++k) {
          const float s = static_cast<float>(x.at(i, k));
          const double* yr = &y.a[k * N];
          for (int64_t j = 0; j < N; ++j) part[j] = std::fma(s, static_cast<float>(yr[j]), part[j]);
        }
        for (int64_t j = 0; j < N; ++j)
          f[j] = acc == kBf16Split ? bf16::round(bf16::round(part[j]) + f[j]) : f[j] + part[j];
      }
      for (int64_t j = 0; j < N; ++j) z.at(i, j) = f[j];
    }
  }
  return z;
}

struct Opt {
  Acc acc = kF64;
  int steps = model::kMuonSteps;
  double coef[3] = {1, 1, 1};  // multipliers of a, b, c
  double norm_mult = 1;
  bool no_eps = false;
  int skip_round = -1;  // 0 X after norm, 1 A, 2 bA, 3 B, 4 aX, 5 X after step
  bool long_side = false;  // Gram on the long side (no transpose for tall)
  bool swap_variance = false;  // per-row / per-column swapped
  bool rz_out = false;  // BF16 outputs truncated instead of rounded
  int epi2 = 0;  // bit 1: B GEMM, bit 2: X GEMM;  // accumulating GEMMs round the product to BF16 before adding C
};

// BF16-rounding orthogonalization (rounding at the GPU's places) unless exact.
void ortho(D& u, MuonOrtho o, const Opt& p) {
  const bool exact = p.acc == kExact64;
  auto rnd = [&](D& m, int where) {
    if (exact || where == p.skip_round) {
      if (!exact)
        for (double& v : m.a) v = static_cast<float>(v);
      return;
    }
    for (double& v : m.a) {
      const float f = static_cast<float>(v);
      v = p.rz_out ? bf16::decode(static_cast<uint16_t>(q2::float_bits(f) >> 16)) : bf16::round(f);
    }
  };
  const bool tall = u.r > u.c;
  const bool t = p.long_side ? !tall : tall;  // long_side: Gram of the long side
  D x = t ? tr(u) : u;
  double ss = 0;
  for (double v : x.a) ss += v * v;
  const double kd = 1.0 / (model::ns_norm_scale(o) * p.norm_mult * std::sqrt(ss) + (p.no_eps ? 0.0 : model::ns_norm_eps(o)));
  if (exact) {
    for (double& v : x.a) v *= kd;
  } else {
    const float k = static_cast<float>(kd);
    for (double& v : x.a) v = static_cast<float>(static_cast<float>(v) * k);
  }
  rnd(x, 0);
  for (int i = 0; i < p.steps; ++i) {
    const model::NsStep c = model::ns_step(o, i);
    const double ca = c.a * p.coef[0], cb = c.b * p.coef[1], cc = c.c * p.coef[2];
    const float fa = static_cast<float>(ca), fb = static_cast<float>(cb), fc = static_cast<float>(cc);
    D a = mul(x, tr(x), p.acc);
    rnd(a, 1);
    D b(a.r, a.c);
    for (size_t j = 0; j < a.a.size(); ++j) b.a[j] = exact ? cb * a.a[j] : static_cast<double>(fb * static_cast<float>(a.a[j]));
    rnd(b, 2);
    D aa = mul(a, a, p.acc);
    if (p.epi2 & 1) for (double& v : aa.a) v = bf16::round(static_cast<float>(static_cast<float>(v) * fc)) / fc;
    for (size_t j = 0; j < b.a.size(); ++j)
      b.a[j] = exact ? cc * aa.a[j] + b.a[j]
               : p.acc == kF64 ? static_cast<double>(fc) * aa.a[j] + b.a[j]
                               : static_cast<double>(fc * static_cast<float>(aa.a[j]) + static_cast<float>(b.a[j]));
    rnd(b, 3);
    D y(x.r, x.c);
    for (size_t j = 0; j < x.a.size(); ++j) y.a[j] = exact ? ca * x.a[j] : static_cast<double>(fa * static_cast<float>(x.a[j]));
    rnd(y, 4);
    D bx = mul(b, x, p.acc);
    if (p.epi2 & 2) for (double& v : bx.a) v = bf16::round(static_cast<float>(v));
    for (size_t j = 0; j < y.a.size(); ++j)
      y.a[j] = exact || p.acc == kF64 ? bx.a[j] + y.a[j] : static_cast<double>(static_cast<float>(bx.a[j]) + static_cast<float>(y.a[j]));
    rnd(y, 5);
    x = y;
  }
  u = t ? tr(x) : x;
}

// One Muon step as cpu::muon_step (float32 elementwise), or in float64 when exact.
void step(float* wf, const float* g, float* m, float* v, int64_t rows, int64_t cols, const model::MuonHyper& h,
          const Opt& p) {
  const int64_t n = rows * cols;
  const float mu = static_cast<float>(h.momentum), one_mu = static_cast<float>(1.0 - h.momentum);
  D x(rows, cols);
  for (int64_t j = 0; j < n; ++j) {
    m[j] = m[j] + one_mu * (g[j] - m[j]);
    x.a[j] = g[j] + mu * (m[j] - g[j]);
  }
  ortho(x, h.ortho, p);
  const bool per_row = model::muon_per_row(rows, cols) != p.swap_variance;
  const int64_t k = per_row ? rows : cols, len = per_row ? cols : rows;
  const int64_t kv = model::muon_second_moment_size(rows, cols);
  std::vector<double> r(k), f(k);
  for (int64_t i = 0; i < k; ++i) {
    double s = 0;
    for (int64_t j = 0; j < len; ++j) {
      const double e = per_row ? x.at(i, j) : x.at(j, i);
      s += e * e;
    }
    r[i] = s / len;
  }
  double norm_sq = 0, new_sq = 0;
  for (int64_t i = 0; i < k; ++i) {
    const double vi = v[i % kv] + (1 - h.beta2) * (r[i] - v[i % kv]);
    if (i < kv) v[i] = static_cast<float>(vi);
    f[i] = 1 / std::sqrt(std::max(vi, 1e-10));
    norm_sq += r[i] * len;
    new_sq += r[i] * len * f[i] * f[i];
  }
  const double keep = std::sqrt(norm_sq) / std::max(std::sqrt(new_sq), 1e-10);
  const double lr = h.lr * model::muon_lr_scale(rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t e = i * cols + j;
      const double u = x.a[e] * f[per_row ? i : j] * keep;
      wf[e] = static_cast<float>(wf[e] - (lr * u + (u * wf[e] >= 0 ? lr * h.weight_decay * wf[e] : 0.0)));
    }
}

double rel_err(const Matrix& got, const Matrix& want, const Matrix& base) {
  double d = 0, n = 0;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double w = static_cast<double>(want.data[i]) - base.data[i], g = static_cast<double>(got.data[i]) - base.data[i];
    d += (g - w) * (g - w);
    n += w * w;
  }
  return std::sqrt(d / n);
}

struct Impl {
  std::string name;
  bool lib;  // cpu::muon_step
  model::cpu::NsPrecision prec;
  Opt opt;
};

int main(int argc, char** argv) {
  const bool small = argc > 1 && std::string(argv[1]) == "small";
  const bool only_tc = argc > 2;
  struct Case {
    int64_t rows, cols;
    std::vector<int64_t> blocks;
  };
  std::vector<Case> cases = {{192, 320, {192}}, {768, 256, {768}}, {256, 256, {256}}, {257, 129, {257}},
                             {512, 256, {256, 128, 128}}};
  if (small) cases = {{96, 160, {96}}, {160, 96, {160}}, {128, 128, {128}}, {129, 65, {129}}};
  std::vector<Impl> impls;
  auto var = [&](std::string n, Opt o) { impls.push_back({n, false, {}, o}); };
  impls.push_back({"kBf16", true, model::cpu::NsPrecision::kBf16, {}});
  impls.push_back({"kF32", true, model::cpu::NsPrecision::kF32, {}});
  Opt o;
  o.acc = kExact64;
  var("f64", o);
  o = {};
  var("v:f64acc", o);
  o.acc = kF32Rev;
  var("v:f32rev", o);
  o.acc = kF32Split;
  var("v:splitK", o);
  o = {};
  o.acc = kTC24;
  var("v:tc24", o);
  o.acc = kTC27;
  var("v:tc27", o);
  o.acc = kTC20;
  var("b:tc20", o);
  o = {};
  o.epi2 = 3;
  var("b:epi2round", o);
  o.epi2 = 1;
  var("b:epi2B", o);
  o.epi2 = 2;
  var("b:epi2X", o);
  o = {};
  o.rz_out = true;
  var("b:rz_out", o);
  o = {};
  o.long_side = true;
  var("v:longside", o);
  o = {};
  o.no_eps = true;
  var("v:no_eps", o);
  o = {};
  o.acc = kBf16Split;
  var("b:bf16splitK", o);
  o = {};
  o.steps = 4;
  var("b:4steps", o);
  for (int c = 0; c < 3; ++c) {
    o = {};
    o.coef[c] = 1.01;
    var(std::string("b:") + "abc"[c] + "*1.01", o);
  }
  o = {};
  o.coef[0] = 1.003;
  var("b:a*1.003", o);
  o = {};
  o.coef[2] = 1.003;
  var("b:c*1.003", o);
  o = {};
  o.norm_mult = 1.01;
  var("b:norm*1.01", o);
  o = {};
  o.norm_mult = 1.03;
  var("b:norm*1.03", o);
  for (int s = 0; s < 6; ++s) {
    o = {};
    o.skip_round = s;
    var("b:noround" + std::to_string(s), o);
  }
  o = {};
  o.swap_variance = true;
  var("b:varswap", o);

  if (only_tc) {
    std::vector<Impl> keep;
    for (auto& i : impls)
      if (i.name == "kBf16" || i.name == "kF32" || i.name == "f64" || i.name.find(argv[2]) != std::string::npos) keep.push_back(i);
    impls = keep;
  }
  const size_t ni = impls.size();
  for (const MuonOrtho ort : {MuonOrtho::kQuintic, MuonOrtho::kPolarExpress})
    for (const Case& c : cases) {
      const int64_t nv = model::muon_second_moment_size(c.blocks, c.cols);
      Matrix w = quant::random_matrix(c.rows, c.cols, quant::Dist::kGaussian, 1, 0.02);
      Matrix m = quant::random_matrix(c.rows, c.cols, quant::Dist::kGaussian, 2, 1e-3);
      Matrix v = quant::random_matrix(1, nv, quant::Dist::kGaussian, 3, 1e-3);
      for (float& x : v.data) x = x * x;
      for (int t = 0; t < 3; ++t) {
        const Matrix g = quant::random_matrix(c.rows, c.cols, quant::Dist::kStudent3, 10 + t, 1e-3);
        const model::MuonHyper h{0.02, 0.9, 0.95, 0.2, ort};
        std::vector<Matrix> W(ni, w), M(ni, m), V(ni, v);
        for (size_t k = 0; k < ni; ++k) {
          int64_t row = 0, mom = 0;
          for (const int64_t rows : c.blocks) {
            const int64_t at = row * c.cols;
            if (impls[k].lib)
              model::cpu::muon_step(W[k].data.data() + at, g.data.data() + at, M[k].data.data() + at, V[k].data.data() + mom,
                                    rows, c.cols, h, impls[k].prec);
            else
              step(W[k].data.data() + at, g.data.data() + at, M[k].data.data() + at, V[k].data.data() + mom, rows, c.cols,
                   h, impls[k].opt);
            row += rows;
            mom += model::muon_second_moment_size(rows, c.cols);
          }
        }
        const double r32 = rel_err(W[0], W[1], w), r64 = rel_err(W[0], W[2], w);
        Matrix zero(1, nv);
        for (size_t k = 0; k < ni; ++k)
          std::printf("%s %ldx%ld step %d %-14s vsBf16 %.5f vsF32 %.5f vsF64 %.5f ratio32 %.3f ratio64 %.3f vV16 %.5f vV64 %.5f\n",
                      ort == MuonOrtho::kQuintic ? "quintic" : "polar", c.rows, c.cols, t + 1, impls[k].name.c_str(),
                      rel_err(W[k], W[0], w), rel_err(W[k], W[1], w), rel_err(W[k], W[2], w), rel_err(W[k], W[1], w) / r32,
                      rel_err(W[k], W[2], w) / r64, rel_err(V[k], V[0], zero), rel_err(V[k], V[2], zero));
        std::fflush(stdout);
        w = W[0];
        m = M[0];
        v = V[0];
      }
    }
}
