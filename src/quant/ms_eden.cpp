#include "quant/ms_eden.h"

#include <cmath>
#include <vector>

#include "common/error.h"
#include "format/e2m1.h"
#include "format/e4m3.h"
#include "quant/checks.h"
#include "quant/philox.h"
#include "quant/rtn.h"

namespace q2::quant {

namespace {

struct GroupSums {
  float vv = 0.0f, vq = 0.0f;
};

void pack_group(const uint8_t* codes, uint8_t* packed) {
  for (int i = 0; i < kBlock; i += 2) packed[i / 2] = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 4));
}

// Codes of one 16-group against first-stage scale m (all +0 when m = 0); returns the EDEN sums.
GroupSums round_group(const float* y, float m, uint8_t* packed) {
  GroupSums s;
  uint8_t codes[kBlock] = {};
  const float f = m == 0.0f ? 0.0f : 1.0f / m;
  for (int i = 0; i < kBlock && m != 0.0f; ++i) {
    const float v = y[i] * f;
    codes[i] = e2m1::encode_rne(v);
    s.vv += v * v;
    s.vq += v * e2m1::decode(codes[i]);
  }
  pack_group(codes, packed);
  return s;
}

float eden_factor(const GroupSums& s) { return s.vq == 0.0f ? 1.0f : s.vv / s.vq; }

float group_amax(const float* y) {
  float g = 0.0f;
  for (int i = 0; i < kBlock; ++i) g = std::max(g, std::fabs(y[i]));
  return g;
}

float post_hoc_first_stage(float g_max) { return e4m3::round_e8m4_rtz(g_max / kMsEdenValMax); }

}  // namespace

ChunkEnergy chunk_energy(const float* x, int n) {
  ChunkEnergy e[128 / kBlock];
  const int groups = n / kBlock;
  for (int g = 0; g < groups; ++g) e[g] = group_energy(x + g * kBlock);
  return combine_groups(e, groups);
}

float eden_group_factor(const float* y) {
  uint8_t packed[kBlock / 2];
  return eden_factor(round_group(y, post_hoc_first_stage(group_amax(y)), packed));
}

NVFP4Tensor quantize_ms_eden(const MatrixRef& x, const Rht& r, uint64_t sr_seed, const MsEdenConfig& cfg) {
  check_shape(x, r.size, "MS-EDEN rotates whole Hadamard chunks along a row");
  if (!valid_eden_fallback(cfg.eden_fallback))
    throw Error("MS-EDEN of " + x.name + ": eden_fallback must be in [0, 1), got " + std::to_string(cfg.eden_fallback));
  checked_amax(x);
  const float s = kMsEdenValMax;
  NVFP4Tensor out(x.rows, x.cols);
  const int64_t groups = out.scale_cols(), per_chunk = r.size / kBlock;
  Matrix y(x.rows, x.cols);  // the rotated tensor
#pragma omp parallel for
  for (int64_t i = 0; i < x.rows; ++i) {
    std::copy(x.row(i), x.row(i) + x.cols, y.row(i));
    rht_forward_row(y.row(i), x.cols, r);
  }

  float pre_t = 0.0f;  // the research variant's tensor scale, from the rotated amax
  if (cfg.tensor_scale == EdenTensorScale::kRotatedAmax)
    pre_t = tensor_scale(checked_amax(MatrixRef(y, x.name + " (rotated)")), 255.99f, s);

  // Pass 1: codes and corrected float32 scales c_g.
  std::vector<float> corrected(static_cast<size_t>(x.rows * groups));
  float c_max = 0.0f;
#pragma omp parallel for reduction(max : c_max)
  for (int64_t i = 0; i < x.rows; ++i) {
    const float* yr = y.row(i);
    uint8_t* pr = out.packed.data() + i * x.cols / 2;
    float* cr = corrected.data() + i * groups;
    for (int64_t c0 = 0; c0 < groups; c0 += per_chunk) {
      if (eden_falls_back(chunk_energy(x.row(i) + c0 * kBlock, r.size), cfg.eden_fallback)) {
        for (int64_t g = c0; g < c0 + per_chunk; ++g) {
          uint8_t codes[kBlock];
          cr[g] = eden_fallback_group(yr + g * kBlock, sr_seed, static_cast<uint64_t>(i * x.cols + g * kBlock), codes);
          pack_group(codes, pr + g * kBlock / 2);
          c_max = std::max(c_max, cr[g]);
        }
        continue;
      }
      GroupSums chunk;
      float m[128 / kBlock];
      for (int64_t g = c0; g < c0 + per_chunk; ++g) {
        const float g_max = group_amax(yr + g * kBlock);
        m[g - c0] = cfg.tensor_scale == EdenTensorScale::kPostHoc
                        ? post_hoc_first_stage(g_max)
                        : e4m3::decode(e4m3::encode_rne((g_max / s) / pre_t)) * pre_t;
        const GroupSums gs = round_group(yr + g * kBlock, m[g - c0], pr + g * kBlock / 2);
        cr[g] = m[g - c0] * eden_factor(gs);
        chunk.vv += gs.vv;
        chunk.vq += gs.vq;
      }
      for (int64_t g = c0; g < c0 + per_chunk; ++g) {
        if (cfg.group == EdenGroup::kChunk) cr[g] = m[g - c0] * eden_factor(chunk);
        c_max = std::max(c_max, cr[g]);
      }
    }
  }

  // Pass 2: align the range and round each corrected scale stochastically onto E4M3.
  const float t = cfg.tensor_scale == EdenTensorScale::kPostHoc ? c_max / 256.0f : pre_t;
  out.tensor_scale = t;
#pragma omp parallel for
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t g = 0; g < groups; ++g) {
      const uint64_t idx = static_cast<uint64_t>(i * groups + g);
      const float c = corrected[static_cast<size_t>(idx)];
      out.scale(i, g) = t == 0.0f ? 0 : e4m3::encode_sr(c / t, philox::word(sr_seed, philox::kScaleSR, idx));
    }
  return out;
}

}  // namespace q2::quant
