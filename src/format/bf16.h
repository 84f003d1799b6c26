#pragma once
// BF16: the top 16 bits of a float32. Rounding is to nearest even; NaN stays NaN.
#include "common/host_device.h"

namespace q2::bf16 {

Q2_HD uint16_t encode(float v) {
  const uint32_t b = float_bits(v);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x7FFFFFu)) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

Q2_HD float decode(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

Q2_HD float round(float v) { return decode(encode(v)); }

}  // namespace q2::bf16
