#pragma once
// Scratch shared by every CUDA linear layer: grow-only BF16 buffers, the NVFP4 operand tensors
// of each shape, per-stream quantizer workspaces, the alpha products, and the side stream with
// its fork and join.
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <utility>

#include "cuda/quant/quant.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/format.h"
#include "linear/plan.h"

namespace q2::cuda {

// A grow-only BF16 buffer from the stream-ordered pool: after the first steps it never
// allocates again. Growing synchronizes stream 0 (rare), so the side stream may use the new
// buffer at once; the old one is freed on stream 0, which has joined every earlier user.
class BF16Buffer {
 public:
  BF16Buffer() = default;
  BF16Buffer(const BF16Buffer&) = delete;
  BF16Buffer& operator=(const BF16Buffer&) = delete;
  ~BF16Buffer();
  __nv_bfloat16* get(int64_t n);
  const __nv_bfloat16* data() const { return p_; }
  void release();  // on stream 0, which has joined every earlier user

 private:
  __nv_bfloat16* p_ = nullptr;
  int64_t n_ = 0;
};

// Expansion buffers: kDeqA/kDeqB for the forward product and dgrad, kDeqC/kDeqD for wgrad,
// whose operands are expanded on the side stream while dgrad still reads its own.
// kRestA/kRestB: the outlier split's rests of dY and of a dense X (wgrad).
enum Slot { kPadded, kWeight, kDeqA, kDeqB, kDeqC, kDeqD, kRestA, kRestB, kBf16Slots };
enum AlphaSlot { kFwdAlpha, kDgradAlpha, kWgradAlpha };
using AlphaLinks = std::pair<AlphaLink, AlphaLink>;  // a product's A and B

// A layer call runs the quantizations that do not feed its next GEMM's other operand on the
// side stream, so they overlap those on stream 0 (the small W-side kernels and wgrad's
// operands, which fill the GPU poorly alone). The side stream is non-blocking (stream 0 never
// waits for it implicitly): each call forks it from stream 0 and joins it back before every
// GEMM, and every call ends joined, so buffers are free again once the GEMM that read them is
// queued.
class Scratch {
 public:
  static Scratch& get();
  __nv_bfloat16* bf16(Slot s, int64_t n) { return bf16_[s].get(n); }
  // One tensor per (operand, shape): layers of different shapes never reallocate each other's.
  DeviceNVFP4& fp4(linear::OperandId which, int64_t rows, int64_t cols);
  // The outlier split's lists of wgrad's A and B (0, 1), and its rest of an NVFP4 X per shape.
  DeviceDominated& dominated(int operand) { return dominated_[operand]; }
  DeviceNVFP4& rest_fp4(int64_t rows, int64_t cols);
  cudaStream_t side() const { return side_; }
  // Status and scratch of the quantizers running on `stream` (one Workspace per stream).
  Workspace& ws(cudaStream_t stream) { return stream == side_ ? side_ws_ : ws_; }
  float* amax(cudaStream_t stream) { return amax_.get() + (stream == side_ ? 1 : 0); }
  float* alpha(AlphaSlot s) { return &products_.get()[s].alpha; }
  // The quantizers of a product's A and B compute its alpha (AlphaLink), in a new generation.
  AlphaLinks alpha_links(AlphaSlot s);
  // The side stream starts after everything queued on stream 0 so far.
  void fork() { hand_over(0, side_); }
  // Stream 0 goes on after everything queued on the side stream so far.
  void join() { hand_over(side_, 0); }

 private:
  Scratch();
  void hand_over(cudaStream_t from, cudaStream_t to);

  BF16Buffer bf16_[kBf16Slots];
  std::map<std::tuple<int, int64_t, int64_t>, DeviceNVFP4> fp4_;
  DeviceDominated dominated_[2];
  Workspace ws_, side_ws_;
  DeviceBuffer<ScaleProduct> products_;  // one per AlphaSlot
  uint32_t generation_[3] = {};
  DeviceBuffer<float> amax_;  // amax scratch of stream 0 and of the side stream
  cudaStream_t side_ = nullptr;
  cudaEvent_t event_ = nullptr;
};

}  // namespace q2::cuda
