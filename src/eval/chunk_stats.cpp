#include "eval/chunk_stats.h"

#include <algorithm>
#include <cmath>

#include "format/nvfp4.h"
#include "quant/checks.h"
#include "quant/ms_eden.h"

namespace q2::eval {

namespace {

struct Moments {
  double energy = 0, share = 0, kurtosis = 0;
};

// The outlier share exactly as MS-EDEN's fallback decides on it (quant::chunk_energy).
Moments moments(const float* x, int n) {
  const quant::ChunkEnergy e = quant::chunk_energy(x, n);
  if (e.sum == 0) return {};
  double e4 = 0;
  for (int i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]) * x[i];
    e4 += v * v;
  }
  return {e.sum, quant::outlier_share(e), n * e4 / (e.sum * e.sum)};
}

Quantiles quantiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    return v[std::max<size_t>(1, static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())))) - 1];
  };
  return {v.front(), at(0.01), at(0.1), at(0.5), at(0.9), at(0.99), v.back()};
}

}  // namespace

std::vector<ChunkStats> chunk_stats(const MatrixRef& x, const quant::Rht& r) {
  quant::check_shape(x, r.size, "chunk statistics take whole Hadamard chunks along a row");
  const int64_t per_row = x.cols / r.size;
  std::vector<ChunkStats> out(static_cast<size_t>(x.rows * per_row));
#pragma omp parallel for
  for (int64_t i = 0; i < x.rows; ++i) {
    std::vector<float> y(x.row(i), x.row(i) + x.cols);
    quant::rht_forward_row(y.data(), x.cols, r);
    for (int64_t c = 0; c < per_row; ++c) {
      const Moments pre = moments(x.row(i) + c * r.size, r.size);
      if (pre.energy == 0) continue;  // stays all zero
      const float* yc = y.data() + c * r.size;
      const Moments rot = moments(yc, r.size);
      ChunkStats& s = out[static_cast<size_t>(i * per_row + c)];
      s = {pre.energy, pre.share, pre.kurtosis, rot.share, rot.kurtosis, INFINITY, -INFINITY};
      for (int g = 0; g < r.size; g += kBlock) {
        const double f = quant::eden_group_factor(yc + g);
        s.eden_min = std::min(s.eden_min, f);
        s.eden_max = std::max(s.eden_max, f);
      }
    }
  }
  return out;
}

ChunkSummary summarize(const std::vector<ChunkStats>& chunks) {
  ChunkSummary s;
  std::vector<double> share, kurt, share_rot, kurt_rot, spread, deviation;
  double energy = 0, dominated_energy = 0;
  for (const ChunkStats& c : chunks) {
    if (c.energy == 0) {
      ++s.zero_chunks;
      continue;
    }
    share.push_back(c.outlier_share);
    kurt.push_back(c.kurtosis);
    share_rot.push_back(c.outlier_share_rot);
    kurt_rot.push_back(c.kurtosis_rot);
    spread.push_back(c.eden_max - c.eden_min);
    deviation.push_back(std::max(std::fabs(c.eden_max - 1), std::fabs(c.eden_min - 1)));
    energy += c.energy;
    if (c.outlier_share > kDominated) {
      s.dominated += 1;
      dominated_energy += c.energy;
    }
  }
  s.chunks = static_cast<int64_t>(share.size());
  if (s.chunks == 0) return s;
  s.dominated /= static_cast<double>(s.chunks);
  s.dominated_energy = dominated_energy / energy;
  s.outlier_share = quantiles(std::move(share));
  s.kurtosis = quantiles(std::move(kurt));
  s.outlier_share_rot = quantiles(std::move(share_rot));
  s.kurtosis_rot = quantiles(std::move(kurt_rot));
  s.eden_spread = quantiles(std::move(spread));
  s.eden_deviation = quantiles(std::move(deviation));
  return s;
}

}  // namespace q2::eval
