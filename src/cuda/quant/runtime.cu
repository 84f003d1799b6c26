// Host plumbing of the GPU quantization layer: error checks, device tensors, workspace.
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/quant/device_common.cuh"
#include "format/scale_layout.h"

namespace q2::cuda {

void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("CUDA error in " + what + ": " + cudaGetErrorString(e));
}

void check_launch(const char* kernel) { check(cudaGetLastError(), std::string("launch of ") + kernel); }

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls start clean
    return false;
  }
  return n > 0;
}

DeviceNVFP4::DeviceNVFP4(int64_t r, int64_t c) { ensure(r, c); }

void DeviceNVFP4::ensure(int64_t r, int64_t c) {
  if (r <= 0 || c <= 0 || c % kBlock != 0)
    throw Error("device NVFP4 tensor of shape [" + std::to_string(r) + ", " + std::to_string(c) +
                "]: needs rows > 0 and cols a positive multiple of 16");
  if (r == rows && c == cols && packed.get()) return;
  rows = r;
  cols = c;
  packed = DeviceBuffer<uint8_t>(r * c / 2);
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

Workspace::Workspace() : flags_(8) {
  check(cudaMemset(flags_.get(), 0, flags_.bytes()), "cudaMemset of the workspace flags");
  // Zeroed before any stream uses them: no quantization clears its own words.
  check(cudaStreamSynchronize(0), "cudaStreamSynchronize (zeroed workspace flags)");
}

const float* Workspace::amax() const { return reinterpret_cast<const float*>(flags_.get() + 4 * turn_); }

void Workspace::throw_if_nonfinite(const std::string& name, cudaStream_t stream) {
  detail::Flags f{};
  check(cudaMemcpyAsync(&f, flags(), sizeof f, cudaMemcpyDeviceToHost, stream), "reading the workspace flags");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (f.nonfinite) throw Error("tensor '" + name + "' contains NaN or Inf (detected on the GPU)");
}

float* Workspace::scratch(int64_t n) {
  if (scratch_.size() < n) {
    scratch_ = DeviceBuffer<float>();  // free first, so peak memory stays one buffer
    scratch_ = DeviceBuffer<float>(n);
  }
  return scratch_.get();
}

namespace detail {

// Resident blocks on the whole device, looked up once per (device, kernel, block shape): the
// occupancy query costs the CPU microseconds, and a layer step launches a dozen quantizers.
int persistent_blocks(const void* kernel, int threads, size_t smem, int64_t needed) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, size_t>, int64_t> resident;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  int64_t blocks = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    int64_t& r = resident[std::make_tuple(device, kernel, threads, smem)];
    if (r == 0) {
      int sms = 0, per_sm = 0;
      check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem),
            "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
      r = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
    }
    blocks = r;
  }
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks, needed)));
}

void require(bool ok, const std::string& tensor, const std::string& problem) {
  if (!ok) throw Error("tensor '" + tensor + "': " + problem);
}

namespace {

template <class View>
int64_t require_view(const View& x, int64_t row_multiple, const std::string& why) {
  require(x.rows > 0 && x.cols > 0, x.name, "is empty");
  require(x.cols % row_multiple == 0, x.name,
          "row length " + std::to_string(x.cols) + " is not a multiple of " + std::to_string(row_multiple) +
              (why.empty() ? "" : " (" + why + ")"));
  require(reinterpret_cast<uintptr_t>(x.data) % 16 == 0, x.name, "device pointer is not 16-byte aligned");
  const int64_t groups = x.rows * x.cols / kGroup;
  require(groups < (int64_t{1} << 31), x.name, "has 2^31 or more 16-groups (too large)");
  return groups;
}

}  // namespace

int64_t require_input(const BF16View& x, int64_t row_multiple, const std::string& why) {
  return require_view(x, row_multiple, why);
}

int64_t require_input(const F32View& x, int64_t row_multiple, const std::string& why) {
  return require_view(x, row_multiple, why);
}

void require_rht128(const quant::Rht& r, const std::string& tensor) {
  require(r.size == 128, tensor, "the GPU MS-EDEN kernels rotate 128-point chunks, got a " + std::to_string(r.size) +
                                     "-point Hadamard transform");
}

}  // namespace detail
}  // namespace q2::cuda
