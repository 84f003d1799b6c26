#pragma once
// The CPU reference of Muon (model/muon.h), float32 with OpenBLAS GEMMs; the CPU backend's
// Backend::muon runs it block by block, and the CUDA backend is tested against it.
#include <cstdint>

#include "common/matrix.h"
#include "model/backend.h"

namespace q2::model::cpu {

// x <- its orthogonalization (the normalization and the 5 steps of model/muon.h), in place.
void orthogonalize(Matrix& x, MuonOrtho ortho);

// One Muon step on a [rows, cols] block: w, g and m hold rows * cols values, v
// muon_second_moment_size(rows, cols).
void muon_step(float* w, const float* g, float* m, float* v, int64_t rows, int64_t cols, const MuonHyper& h);

}  // namespace q2::model::cpu
