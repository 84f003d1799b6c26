// Rotary embedding in place, computed like cpu::rope: the inverse frequencies are the host's
// float64 std::pow values (passed as a kernel parameter), the angle pos * inv_freq[i] is a
// float64 product, cos and sin are float64 and rounded to float, the rotation is float32.
#include <cmath>

#include "cuda/ops/common.cuh"

namespace q2::cuda::ops {
namespace {

constexpr int kMaxHalf = 128;  // head_dim <= 256
constexpr int kRowsPerBlock = 4;

struct InvFreq {
  double v[kMaxHalf];
};

// threadIdx.x walks the pairs i of one row (threadIdx.y), the heads share each cos/sin.
__global__ void rope_kernel(bf16* __restrict__ x, int64_t rows, int64_t ld, int64_t col0, int n_heads, int head_dim,
                            int64_t seq, InvFreq inv_freq, int direction) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (t >= rows) return;
  const int half = head_dim / 2;
  const double pos = static_cast<double>(t % seq);
  bf16* r = x + t * ld + col0;
  for (int i = threadIdx.x; i < half; i += 32) {
    double sd, cd;
    sincos(pos * inv_freq.v[i], &sd, &cd);
    const float c = static_cast<float>(cd), s = static_cast<float>(direction * sd);
    for (int h = 0; h < n_heads; ++h) {
      bf16* p = r + static_cast<int64_t>(h) * head_dim;
      const float x1 = __bfloat162float(p[i]), x2 = __bfloat162float(p[i + half]);
      p[i] = __float2bfloat16_rn(x1 * c - x2 * s);
      p[i + half] = __float2bfloat16_rn(x2 * c + x1 * s);
    }
  }
}

}  // namespace

void rope(bf16* x, int64_t rows, int64_t ld, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta,
          int direction) {
  if (rows <= 0 || n_heads <= 0) return;
  detail::require(head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= kMaxHalf, "rope",
                  "head_dim must be even and at most " + std::to_string(2 * kMaxHalf));
  detail::require(seq > 0 && col0 >= 0 && col0 + n_heads * head_dim <= ld, "rope", "columns outside the tensor");
  detail::require(direction == 1 || direction == -1, "rope", "direction must be +1 or -1");
  InvFreq f{};
  for (int64_t i = 0; i < head_dim / 2; ++i) f.v[i] = std::pow(theta, -2.0 * i / head_dim);
  rope_kernel<<<static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), dim3(32, kRowsPerBlock)>>>(
      x, rows, ld, col0, static_cast<int>(n_heads), static_cast<int>(head_dim), seq, f, direction);
  check_launch("rope_kernel");
}

}  // namespace q2::cuda::ops
