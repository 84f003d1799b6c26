#pragma once
// The CPU reference of Muon (model/muon.h), float32 with OpenBLAS GEMMs; the CPU backend's
// Backend::muon runs it block by block, and the CUDA backend is tested against it.
#include <cstdint>

#include "common/matrix.h"
#include "model/backend.h"

namespace q2::model::cpu {

// Where the orthogonalization rounds. kF32: float32 throughout (the CPU backend). kBf16: to BF16
// wherever the CUDA backend (cuda/muon.cpp) stores a BF16 value, with float32 GEMM accumulation
// between: X after the normalization, A = X X^T, b A, B = b A + c A A, a X and X after each step.
// The GPU is tested against kBf16: its update differs from kF32's by 2-4% through those roundings
// alone, which would hide a defect of that size.
enum class NsPrecision { kF32, kBf16 };

// x <- its orthogonalization (the normalization and the 5 steps of model/muon.h), in place.
void orthogonalize(Matrix& x, MuonOrtho ortho, NsPrecision p = NsPrecision::kF32);

// One Muon step on a [rows, cols] block: w, g and m hold rows * cols values, v
// muon_second_moment_size(rows, cols).
void muon_step(float* w, const float* g, float* m, float* v, int64_t rows, int64_t cols, const MuonHyper& h,
               NsPrecision p = NsPrecision::kF32);

}  // namespace q2::model::cpu
