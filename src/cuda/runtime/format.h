#pragma once
// Device tensor formats, the GPU side of src/format, shared by the quantizers (quant/) and
// the GEMMs (gemm/):
//   BF16 tensor   __nv_bfloat16 [rows, cols], row-major (the CPU reference sees float(x), exact).
//   NVFP4 tensor  DeviceNVFP4: packed E2M1 codes uint8 [rows, cols/2] (even element in the low
//                 nibble), E4M3 scales in the cuBLASLt 128x4 blocked layout (scale_layout.h,
//                 padding zero) and one float32 tensor scale, all in device memory.
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "cuda/runtime/device.h"
#include "format/nvfp4.h"

namespace q2::cuda {

// A BF16 row-major matrix in device memory (not owned); `name` appears in error messages.
// `data` must be 16-byte aligned (cudaMalloc'ed buffers are).
struct BF16View {
  const __nv_bfloat16* data = nullptr;
  int64_t rows = 0, cols = 0;
  std::string name;
};
// A float32 tensor that the forward quantizers (amax, RTN, Four-over-Six, 16x16) read as its
// BF16 copy (round to nearest even, as ops::convert), without the copy: for float32 master
// weights.
struct F32View {
  const float* data = nullptr;
  int64_t rows = 0, cols = 0;
  std::string name;
};

// An NVFP4 tensor in device memory. The scale buffer is zeroed when allocated, so the padding
// of the blocked layout stays zero (kernels write only real scales).
struct DeviceNVFP4 {
  int64_t rows = 0, cols = 0;
  DeviceBuffer<uint8_t> packed;      // rows * cols / 2 bytes
  DeviceBuffer<uint8_t> scales;      // blocked_scale_bytes(rows, cols / 16) bytes
  DeviceBuffer<float> tensor_scale;  // one float

  DeviceNVFP4() = default;
  DeviceNVFP4(int64_t rows, int64_t cols);  // cols must be a positive multiple of 16
  int64_t scale_cols() const { return cols / kBlock; }
  // Reallocates (zeroed scales) unless the shape already matches. Reallocating synchronizes,
  // so any stream may write the tensor next.
  void ensure(int64_t rows, int64_t cols);
};

// Copies a device tensor back (synchronous), scales converted to row-major.
NVFP4Tensor to_host(const DeviceNVFP4& t);
// Uploads a host tensor (synchronous), scales converted to the blocked layout.
DeviceNVFP4 to_device(const NVFP4Tensor& t);

}  // namespace q2::cuda
