#include "cuda/linear/scratch.h"

#include <string>

namespace q2::cuda {

BF16Buffer::~BF16Buffer() { release(); }

void BF16Buffer::release() {
  if (p_) cudaFreeAsync(p_, 0);
  p_ = nullptr;
  n_ = 0;
}

__nv_bfloat16* BF16Buffer::get(int64_t n) {
  if (n > n_) {
    release();
    p_ = static_cast<__nv_bfloat16*>(device_alloc(static_cast<size_t>(n) * 2, "BF16 buffer"));
    n_ = n;
  }
  return p_;
}

Scratch& Scratch::get() {
  static Scratch* s = new Scratch;  // never destroyed: freeing after the CUDA context is torn down fails
  return *s;
}

Scratch::Scratch() : products_(3), amax_(2) {
  // Zeroed before the side stream's first use.
  check(cudaMemset(products_.get(), 0, products_.bytes()), "cudaMemset of the alpha products");
  check(cudaStreamSynchronize(0), "cudaStreamSynchronize (zeroed alpha products)");
  check(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
}

DeviceNVFP4& Scratch::fp4(linear::OperandId which, int64_t rows, int64_t cols) {
  DeviceNVFP4& t = fp4_[std::make_tuple(static_cast<int>(which), rows, cols)];
  t.ensure(rows, cols);
  return t;
}

DeviceNVFP4& Scratch::rest_fp4(int64_t rows, int64_t cols) {
  DeviceNVFP4& t = fp4_[std::make_tuple(-1, rows, cols)];  // -1: no operand's
  t.ensure(rows, cols);
  return t;
}

AlphaLinks Scratch::alpha_links(AlphaSlot s) {
  if (++generation_[s] == 0) ++generation_[s];  // 0 is the zeroed memory's
  ScaleProduct* p = products_.get() + s;
  return {AlphaLink{p, 0, generation_[s]}, AlphaLink{p, 1, generation_[s]}};
}

// Each wait is queued right after its record, so one event serves every hand-over.
void Scratch::hand_over(cudaStream_t from, cudaStream_t to) {
  check(cudaEventRecord(event_, from), "cudaEventRecord");
  check(cudaStreamWaitEvent(to, event_, 0), "cudaStreamWaitEvent");
}

}  // namespace q2::cuda
