// Host side of the quantizers: the Workspace and the launch helpers of device_common.cuh.
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/quant/device_common.cuh"

namespace q2::cuda {

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

EdenFallback eden_setup(const EdenRotation& r, double tau, uint64_t sr_seed, const std::string& tensor) {
  auto require_128 = [&](const quant::Rht& rot) {
    require(rot.size == 128, tensor, "the GPU MS-EDEN kernels rotate 128-point chunks, got a " +
                                         std::to_string(rot.size) + "-point Hadamard transform");
  };
  require_128(r.r);
  if (r.twice) require_128(r.first);
  require(quant::valid_eden_fallback(tau), tensor,
          "MS-EDEN's eden_fallback must be in [0, 1), got " + std::to_string(tau));
  require(!(r.twice && tau > 0), tensor,
          "MS-EDEN's eden_fallback with two rounds of rotation has no GPU kernels (the CPU backend runs it)");
  return EdenFallback{tau, sr_seed};
}

}  // namespace detail
}  // namespace q2::cuda
