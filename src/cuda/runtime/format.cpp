#include "cuda/runtime/format.h"

#include <vector>

#include "common/error.h"
#include "format/scale_layout.h"

namespace q2::cuda {

DeviceNVFP4::DeviceNVFP4(int64_t r, int64_t c) { ensure(r, c); }

void DeviceNVFP4::ensure(int64_t r, int64_t c) {
  if (r <= 0 || c <= 0 || c % kBlock != 0)
    throw Error("device NVFP4 tensor of shape [" + std::to_string(r) + ", " + std::to_string(c) +
                "]: needs rows > 0 and cols a positive multiple of 16");
  if (r == rows && c == cols && packed.get()) return;
  rows = r;
  cols = c;
  packed = DeviceBuffer<uint8_t>(nvfp4_packed_bytes(r, c));
  scales = DeviceBuffer<uint8_t>(blocked_scale_bytes(r, c / kBlock));
  tensor_scale = DeviceBuffer<float>(1);
  check(cudaMemset(scales.get(), 0, scales.bytes()), "cudaMemset of the blocked scales");
  check(cudaStreamSynchronize(0), "cudaStreamSynchronize (zeroed scales)");  // stream 0 alone orders the memset
}

NVFP4Tensor to_host(const DeviceNVFP4& t) {
  NVFP4Tensor h(t.rows, t.cols);
  std::vector<uint8_t> blocked(t.scales.bytes());
  check(cudaMemcpy(h.packed.data(), t.packed.get(), t.packed.bytes(), cudaMemcpyDeviceToHost), "to_host (codes)");
  check(cudaMemcpy(blocked.data(), t.scales.get(), t.scales.bytes(), cudaMemcpyDeviceToHost), "to_host (scales)");
  check(cudaMemcpy(&h.tensor_scale, t.tensor_scale.get(), sizeof(float), cudaMemcpyDeviceToHost),
        "to_host (tensor scale)");
  h.scales = scales_from_blocked(blocked, t.rows, t.scale_cols());
  return h;
}

DeviceNVFP4 to_device(const NVFP4Tensor& h) {
  DeviceNVFP4 t(h.rows, h.cols);
  const std::vector<uint8_t> blocked = scales_to_blocked(h.scales, h.rows, h.scale_cols());
  check(cudaMemcpy(t.packed.get(), h.packed.data(), t.packed.bytes(), cudaMemcpyHostToDevice), "to_device (codes)");
  check(cudaMemcpy(t.scales.get(), blocked.data(), t.scales.bytes(), cudaMemcpyHostToDevice), "to_device (scales)");
  check(cudaMemcpy(t.tensor_scale.get(), &h.tensor_scale, sizeof(float), cudaMemcpyHostToDevice),
        "to_device (tensor scale)");
  return t;
}

}  // namespace q2::cuda
