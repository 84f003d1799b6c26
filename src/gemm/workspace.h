#pragma once
// The CUDA backend's one cuBLASLt workspace (cuda/gemm/gemm.cpp), sized here so that the memory
// plan (train/memory_plan.h) counts what the GEMMs allocate.
#include <cstddef>

namespace q2::gemm {

constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

}  // namespace q2::gemm
