#include "cuda/muon.h"

#include <cuda_bf16.h>

#include <utility>

#include "cuda/ops/ops.h"
#include "cuda/runtime/tensor.h"
#include "model/muon.h"

namespace q2::cuda {

void muon_step(model::Backend& gemm, float* w, const float* g, float* m, float* v, int64_t rows, int64_t cols,
               const model::MuonHyper& h) {
  using model::DType;
  auto f32 = [](const model::Tensor& t) { return static_cast<float*>(t.data); };
  auto bf16 = [](const model::Tensor& t) { return static_cast<__nv_bfloat16*>(t.data); };
  const int64_t n = rows * cols;
  // X stays [rows, cols]; a tall block (rows > cols) takes its Gram matrix as X^T X and its
  // update as X B^T, which is the transposed iteration nanochat runs on X^T.
  const bool tall = rows > cols;
  const int64_t s = tall ? cols : rows;
  // The sums b A + c A A and a X + B X are accumulated in float32 and rounded once, as the CPU
  // reference rounds them: a GEMM accumulating onto a BF16 C rounded its product to BF16 first
  // (the H100 then missed GpuMuon's bound; docs/evidence/muon-bound/). u, the float32 update,
  // is free after the normalization and holds a X + B X.
  model::Tensor u = device_tensor(rows, cols, DType::kF32, Fill::kNone);
  model::Tensor x = device_tensor(rows, cols, DType::kBF16, Fill::kNone);
  model::Tensor y = device_tensor(rows, cols, DType::kBF16, Fill::kNone);
  model::Tensor a = device_tensor(s, s, DType::kBF16, Fill::kNone), b = device_tensor(s, s, DType::kBF16, Fill::kNone);
  model::Tensor b32 = device_tensor(s, s, DType::kF32, Fill::kNone);
  model::Tensor sum_sq = device_tensor(1, 2, DType::kF32, Fill::kNone);  // 8 bytes: one double
  auto* ss = static_cast<double*>(sum_sq.data);

  ops::muon_momentum(g, m, f32(u), n, h.momentum, h.grad_scale);
  ops::sum_squares_async(f32(u), n, ss);
  ops::muon_normalize(f32(u), ss, model::ns_norm_scale(h.ortho), model::ns_norm_eps(h.ortho), bf16(x), n);
  for (int i = 0; i < model::kMuonSteps; ++i) {
    const model::NsStep c = model::ns_step(h.ortho, i);
    gemm.matmul(x, tall, x, !tall, a, 1.0f, false);  // A = X^T X (tall) or X X^T
    ops::scaled_copy(bf16(a), static_cast<float>(c.b), f32(b32), s * s);
    gemm.matmul(a, false, a, false, b32, static_cast<float>(c.c), true);  // B = b A + c A A
    ops::convert(f32(b32), bf16(b), s * s);
    ops::scaled_copy(bf16(x), static_cast<float>(c.a), f32(u), n);
    if (tall) gemm.matmul(x, false, b, true, u, 1.0f, true);  // X = a X + X B^T
    else gemm.matmul(b, false, x, false, u, 1.0f, true);      // X = a X + B X
    ops::convert(f32(u), bf16(y), n);
    std::swap(x, y);
  }
  model::Tensor f = device_tensor(1, model::muon_second_moment_size(rows, cols), DType::kF32, Fill::kNone);
  ops::muon_variance(bf16(x), rows, cols, v, h.beta2, f32(f));
  ops::muon_update(w, bf16(x), f32(f), rows, cols, h.lr * model::muon_lr_scale(rows, cols), h.weight_decay);
}

}  // namespace q2::cuda
