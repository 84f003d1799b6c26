#include "quant/reference64.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "quant/philox.h"

namespace q2::ref64 {

namespace {
constexpr double kHair = 1e-5;  // relative closeness to a threshold that counts as ambiguous
constexpr int kB = 16;
}  // namespace

const std::vector<double>& e2m1_grid() {
  static const std::vector<double> g = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  return g;
}

const std::vector<double>& e4m3_grid() {
  static const std::vector<double> g = [] {
    std::vector<double> v;
    for (int m = 0; m < 8; ++m) v.push_back(m * std::ldexp(1.0, -9));  // subnormals
    for (int e = 1; e < 16; ++e)
      for (int m = 0; m < 8; ++m)
        if (!(e == 15 && m == 7)) v.push_back((1.0 + m / 8.0) * std::ldexp(1.0, e - 7));
    return v;
  }();
  return g;
}

int nearest_even(const std::vector<double>& grid, double a, double* margin) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(grid.size()); ++i) {
    const double di = std::fabs(a - grid[i]), db = std::fabs(a - grid[best]);
    if (di < db || (di == db && i % 2 == 0)) best = i;
  }
  if (margin) {
    // Distance to the closest midpoint, relative to the local step.
    double m = INFINITY;
    for (size_t i = 0; i + 1 < grid.size(); ++i) {
      const double mid = 0.5 * (grid[i] + grid[i + 1]), step = grid[i + 1] - grid[i];
      m = std::min(m, std::fabs(a - mid) / step);
    }
    *margin = m;
  }
  return best;
}

namespace {

double amax_of(const Matrix& x) {
  double a = 0.0;
  for (float v : x.data) a = std::max(a, std::fabs(static_cast<double>(v)));
  return a;
}

// RTN of one block against (val_max, t): dequantized values, squared error, ambiguity.
struct Block {
  double v[kB];
  double err = 0.0;
  bool ambiguous = false;
};

Block rtn_block(const float* x, double val_max, double t) {
  Block b;
  double g_max = 0.0;
  for (int i = 0; i < kB; ++i) g_max = std::max(g_max, std::fabs(static_cast<double>(x[i])));
  double margin;
  const double s = e4m3_grid()[nearest_even(e4m3_grid(), std::min(g_max / val_max / t, 448.0), &margin)];
  b.ambiguous = margin < kHair;
  for (int i = 0; i < kB; ++i) {
    double q = 0.0;
    if (s > 0) {
      const double a = std::fabs(x[i]) / (s * t);
      q = e2m1_grid()[nearest_even(e2m1_grid(), std::min(a, 6.0), &margin)];
      b.ambiguous = b.ambiguous || margin < kHair;
    }
    b.v[i] = std::copysign(q, static_cast<double>(x[i])) * s * t;
    b.err += (x[i] - b.v[i]) * (x[i] - b.v[i]);
  }
  return b;
}

void put(Result& r, int64_t base, const Block& b) {
  for (int i = 0; i < kB; ++i) {
    r.value[base + i] = b.v[i];
    r.ambiguous[base + i] = b.ambiguous;
  }
}

Result empty_result(const Matrix& x) {
  Result r;
  r.value.assign(x.data.size(), 0.0);
  r.ambiguous.assign(x.data.size(), 0);
  return r;
}

}  // namespace

Result rtn(const Matrix& x, double val_max, double scale_max) {
  Result r = empty_result(x);
  const double amax = amax_of(x);
  r.tensor_scale = amax == 0 ? 1.0 : amax / (scale_max * val_max);
  for (int64_t b = 0; b < x.size(); b += kB) put(r, b, rtn_block(x.data.data() + b, val_max, r.tensor_scale));
  return r;
}

Result four_over_six(const Matrix& x) {
  Result r = empty_result(x);
  const double amax = amax_of(x);
  r.tensor_scale = amax == 0 ? 1.0 : amax / (256.0 * 6.0);
  for (int64_t b = 0; b < x.size(); b += kB) {
    const Block six = rtn_block(x.data.data() + b, 6.0, r.tensor_scale);
    const Block four = rtn_block(x.data.data() + b, 4.0, r.tensor_scale);
    Block chosen = four.err < six.err ? four : six;
    chosen.ambiguous = six.ambiguous || four.ambiguous ||
                       std::fabs(four.err - six.err) <= kHair * std::max(four.err, six.err);
    put(r, b, chosen);
  }
  return r;
}

namespace {
double uniform24(uint32_t w) { return static_cast<double>(w >> 8) * std::ldexp(1.0, -24); }

// Stochastic rounding of a >= 0 between its grid neighbours, with the spec's coin u < p.
double sr_grid(const std::vector<double>& grid, double a, uint32_t word, bool& ambiguous) {
  if (a >= grid.back()) return grid.back();
  const auto hi = std::upper_bound(grid.begin(), grid.end(), a);
  const double up = *hi, lo = *(hi - 1), p = (a - lo) / (up - lo), u = uniform24(word);
  ambiguous = ambiguous || std::fabs(u - p) < kHair;
  return u < p ? up : lo;
}
}  // namespace

Result sr(const Matrix& x, double scale_override, uint64_t seed) {
  Result r = empty_result(x);
  const double val_max = 6.0 / scale_override, amax = amax_of(x);
  r.tensor_scale = amax == 0 ? 1.0 : amax / (448.0 * val_max);
  const double t = r.tensor_scale;
  for (int64_t b = 0; b < x.size(); b += kB) {
    double g_max = 0.0;
    for (int i = 0; i < kB; ++i) g_max = std::max(g_max, std::fabs(static_cast<double>(x.data[b + i])));
    double margin;
    const double s = e4m3_grid()[nearest_even(e4m3_grid(), g_max / val_max / t, &margin)];
    bool amb = margin < kHair;
    for (int i = 0; i < kB; ++i) {
      const double xi = x.data[b + i];
      const double q = s == 0 ? 0.0
                              : sr_grid(e2m1_grid(), std::fabs(xi) / (s * t),
                                        philox::word(seed, philox::kElementSR, static_cast<uint64_t>(b + i)), amb);
      r.value[b + i] = std::copysign(q, xi) * s * t;
    }
    for (int i = 0; i < kB; ++i) r.ambiguous[b + i] = amb;
  }
  return r;
}

std::vector<double> rht(const Matrix& x, const quant::Rht& r) {
  const int n = r.size;
  std::vector<double> y(x.data.size());
  for (int64_t c0 = 0; c0 < x.size(); c0 += n)
    for (int i = 0; i < n; ++i) {
      double acc = 0.0;
      for (int j = 0; j < n; ++j)
        acc += (std::popcount(static_cast<unsigned>(i & j)) % 2 ? -1.0 : 1.0) * r.sign(j) * x.data[c0 + j];
      y[c0 + i] = acc / std::sqrt(static_cast<double>(n));
    }
  return y;
}

EdenGroup eden_group(const double* y) {
  EdenGroup g;
  double g_max = 0;
  for (int i = 0; i < kB; ++i) g_max = std::max(g_max, std::fabs(y[i]));
  // E8M4 truncation: keep 5 significant bits of g_max / s.
  const double a = g_max / (6.0 / ((17.0 / 16.0) * 0.93));
  const double e = a > 0 ? std::floor(std::log2(a)) : 0, ulp = std::ldexp(1.0, static_cast<int>(e) - 4);
  g.m = a > 0 ? std::floor(a / ulp) * ulp : 0.0;
  g.ambiguous = a > 0 && (a / ulp - std::floor(a / ulp) < kHair || std::ceil(a / ulp) - a / ulp < kHair);
  for (int i = 0; i < kB; ++i) {
    const double v = g.m > 0 ? y[i] / g.m : 0.0;
    double margin;
    g.q[i] = std::copysign(e2m1_grid()[nearest_even(e2m1_grid(), std::min(std::fabs(v), 6.0), &margin)], v);
    g.ambiguous = g.ambiguous || (g.m > 0 && margin < kHair);
    g.vv += v * v;
    g.vq += v * g.q[i];
  }
  return g;
}

Result ms_eden(const Matrix& x, const quant::Rht& r, uint64_t sr_seed, bool chunk_group, double eden_fallback) {
  Result res = empty_result(x);
  const std::vector<double> y = rht(x, r);
  const int64_t groups = x.size() / kB;
  std::vector<double> corrected(groups), q(x.data.size());
  std::vector<uint8_t> amb(groups, 0);
  const int per_chunk = r.size / kB;
  for (int64_t c0 = 0; c0 < groups; c0 += per_chunk) {
    double energy = 0, top = 0;
    for (int64_t i = c0 * kB; i < (c0 + per_chunk) * kB; ++i) {
      const double v = static_cast<double>(x.data[i]) * x.data[i];
      energy += v;
      top = std::max(top, v);
    }
    const double share = energy > 0 ? top / energy : 0;
    if (eden_fallback > 0 && share > eden_fallback) {
      const bool chunk_amb = share - eden_fallback < kHair * eden_fallback;
      for (int64_t g = c0; g < c0 + per_chunk; ++g) {
        const double* yg = y.data() + g * kB;
        double g_max = 0;
        for (int i = 0; i < kB; ++i) g_max = std::max(g_max, std::fabs(yg[i]));
        bool a = chunk_amb;
        for (int i = 0; i < kB; ++i) {
          const uint64_t idx = static_cast<uint64_t>(g * kB + i);
          const double v = g_max > 0 ? std::fabs(yg[i]) / g_max * 6.0 : 0.0;
          q[idx] = std::copysign(sr_grid(e2m1_grid(), v, philox::word(sr_seed, philox::kElementSR, idx), a), yg[i]);
        }
        corrected[g] = g_max / 6.0;
        amb[g] = a;
      }
      continue;
    }
    const bool chunk_near = eden_fallback > 0 && eden_fallback - share < kHair * eden_fallback;
    double chunk_vv = 0, chunk_vq = 0;
    std::vector<double> m(per_chunk), factor(per_chunk);
    bool chunk_amb = false;
    for (int g = 0; g < per_chunk; ++g) {
      const EdenGroup eg = eden_group(y.data() + (c0 + g) * kB);
      m[g] = eg.m;
      std::copy(eg.q.begin(), eg.q.end(), q.begin() + (c0 + g) * kB);
      factor[g] = eg.factor();
      chunk_vv += eg.vv;
      chunk_vq += eg.vq;
      amb[c0 + g] = eg.ambiguous || chunk_near;
      chunk_amb = chunk_amb || eg.ambiguous;
    }
    for (int g = 0; g < per_chunk; ++g) {
      corrected[c0 + g] = m[g] * (chunk_group ? (chunk_vq == 0 ? 1.0 : chunk_vv / chunk_vq) : factor[g]);
      if (chunk_group) amb[c0 + g] = chunk_amb || chunk_near;
    }
  }
  const double t = *std::max_element(corrected.begin(), corrected.end()) / 256.0;
  res.tensor_scale = t;
  for (int64_t g = 0; g < groups; ++g) {
    bool a = amb[g];
    const double s8 = t == 0 ? 0.0
                             : sr_grid(e4m3_grid(), corrected[g] / t,
                                       philox::word(sr_seed, philox::kScaleSR, static_cast<uint64_t>(g)), a);
    for (int i = 0; i < kB; ++i) {
      res.value[g * kB + i] = q[g * kB + i] * s8 * t;
      res.ambiguous[g * kB + i] = a;
    }
  }
  return res;
}

Agreement compare(const Matrix& dq, const Result& ref, double rel_tol) {
  Agreement a;
  for (size_t i = 0; i < dq.data.size(); ++i) {
    if (ref.ambiguous[i]) {
      ++a.ambiguous;
    } else if (std::fabs(dq.data[i] - ref.value[i]) > rel_tol * std::fabs(ref.value[i])) {
      ++a.mismatched;
    }
  }
  return a;
}

}  // namespace q2::ref64
