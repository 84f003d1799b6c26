#pragma once
// A whole matrix rounded to BF16 (bf16::round on each element): what the GPU's BF16 tensors hold,
// and the operand of every BF16 product on the CPU side.
#include "common/matrix.h"
#include "format/bf16.h"

namespace q2::bf16 {

Matrix round(Matrix m);

}  // namespace q2::bf16
