#pragma once
// Scalar numerics shared verbatim by the CPU reference and the CUDA kernels:
// one definition, so both sides round identically.
#if defined(__CUDACC__)
#define Q2_HD __host__ __device__ __forceinline__
#else
#define Q2_HD inline
#endif

#include <cstdint>
#include <cstring>

namespace q2 {

Q2_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

Q2_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

Q2_HD bool is_finite(float f) { return (float_bits(f) & 0x7F800000u) != 0x7F800000u; }

}  // namespace q2
