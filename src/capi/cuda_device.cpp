// The CUDA half of the C API: views of the caller's device memory through the CUDA linear layer
// (cuda::make_cuda_linear) and the quantization kernels of src/cuda/quant. The layer works on
// the legacy default stream; a caller's stream is joined to it with events (StreamJoin).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "capi/device.h"
#include "cuda/gemm/gemm.h"
#include "cuda/linear/linear.h"
#include "cuda/ops/ops.h"
#include "cuda/quant/quant.h"
#include "linear/plan.h"

namespace q2::cuda {
namespace {

using capi::Fail;

model::Tensor view(const q2_tensor& t) {
  model::Tensor v;
  v.rows = t.rows;
  v.cols = t.cols;
  v.dtype = t.dtype == Q2_BFLOAT16 ? model::DType::kBF16 : model::DType::kF32;
  v.data = t.data;
  return v;
}

// For one call: stream 0 starts after the work queued on the caller's stream so far, and the
// caller's stream waits for what the call queued on stream 0 (also when the call throws).
class StreamJoin {
 public:
  explicit StreamJoin(void* stream) : s_(static_cast<cudaStream_t>(stream)) {
    if (!joined()) return;
    // An event per call: a shared one would belong to one device, and layers on other threads
    // could record it between this call's record and wait.
    check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaEventRecord(event_, s_), "cudaEventRecord (caller's stream)");
    check(cudaStreamWaitEvent(0, event_, 0), "cudaStreamWaitEvent (stream 0 after the caller's stream)");
  }
  StreamJoin(const StreamJoin&) = delete;
  StreamJoin& operator=(const StreamJoin&) = delete;
  ~StreamJoin() {
    if (!event_) return;
    // In a destructor: errors surface at the caller's next CUDA call.
    cudaEventRecord(event_, 0);
    cudaStreamWaitEvent(s_, event_, 0);
    cudaEventDestroy(event_);
  }

 private:
  // The legacy default stream needs no join (it is stream 0).
  bool joined() const { return s_ != nullptr && s_ != cudaStreamLegacy; }
  cudaStream_t s_;
  cudaEvent_t event_ = nullptr;
};

// The ops of a CudaRunner are CUDA layers (make_op).
CudaLinear& cuda_op(model::LinearOp& op) { return static_cast<CudaLinear&>(op); }

class CudaRunner final : public capi::LayerRunner {
 public:
  CudaRunner(linear::Scheme scheme, std::string name)
      : scheme_(std::move(scheme)), plan_(linear::make_plan(scheme_)), name_(std::move(name)),
        native_(blas::has_native_nvfp4()) {
    try {
      make_cuda_linear(scheme_, name_, native_);
    } catch (const Error& e) {
      throw Fail(Q2_ERROR_UNSUPPORTED, e.what());
    }
  }

  std::unique_ptr<model::LinearOp> make_op() override { return make_cuda_linear(scheme_, name_, native_); }
  // The layer keeps a dense BF16 X by reference when it needs no padding (cuda/linear/linear.h).
  bool borrows_input() const override { return plan_.saved_x != linear::Kept::kNvfp4; }
  // Requantizing a saved NVFP4 X_q or W_q reads 16-byte rows of codes (cuda/quant/quant.h).
  int64_t in_multiple() const override {
    for (const linear::BackwardOperand* o : {&plan_.dgrad.b, &plan_.wgrad.b}) {
      const linear::Kept kept = o->source == linear::Source::kSavedW ? plan_.saved_w : plan_.saved_x;
      if (kept == linear::Kept::kNvfp4 && o->quantized() && o->quant != linear::BwdQuant::kForward) return 32;
    }
    return 1;
  }

  void forward(model::LinearOp& op, const q2_tensor& x, const q2_tensor& w, const q2_tensor& y, bool keep,
               void* stream) override {
    StreamJoin join(stream);
    model::Tensor wv = view(w);
    if (w.dtype == Q2_BFLOAT16) {  // the layer reads float32 master weights: widen (exact)
      if (w32_.size() != wv.size()) w32_ = DeviceBuffer<float>(wv.size());
      ops::convert(static_cast<const __nv_bfloat16*>(w.data), w32_.get(), wv.size());
      wv.data = w32_.get();
      wv.dtype = model::DType::kF32;
    }
    cuda_op(op).forward_into(view(x), wv, keep, y.data);
  }

  void backward(model::LinearOp& op, const q2_tensor& dy, uint64_t seed, const q2_tensor* dx, const q2_tensor& dw,
                void* stream) override {
    StreamJoin join(stream);
    model::Tensor dwv = view(dw);
    cuda_op(op).backward_into(view(dy), seed, dwv, dx ? dx->data : nullptr);
  }

 private:
  linear::Scheme scheme_;
  linear::Plan plan_;
  std::string name_;
  bool native_;                // NVFP4 products on FP4 tensor cores where the GPU has them
  DeviceBuffer<float> w32_;    // a BF16 weight widened to float32
};

class CudaDevice final : public capi::Device {
 public:
  const char* name() const override { return "cuda"; }
  q2_dtype activation_dtype() const override { return Q2_BFLOAT16; }
  bool bf16_weights() const override { return true; }

  void check_memory(const void* data, const std::string& what) const override {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, data) != cudaSuccess) {
      cudaGetLastError();  // an unknown pointer is host memory here; leave no sticky error
      a.type = cudaMemoryTypeUnregistered;
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
      throw Fail(Q2_ERROR_WRONG_DEVICE, what + " is host memory; the cuda call needs device memory");
    if (reinterpret_cast<uintptr_t>(data) % 16 != 0)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, what + " is not 16-byte aligned (the kernels load 16 bytes at a time)");
  }

  std::unique_ptr<capi::LayerRunner> make_runner(const linear::Scheme& scheme, const std::string& name) const override {
    return std::make_unique<CudaRunner>(scheme, name);
  }

  void quantize(linear::FwdQuant q, const q2_tensor& x, const q2_nvfp4& out, void* stream) const override {
    if (out.layout != Q2_SCALES_BLOCKED)
      throw Fail(Q2_ERROR_UNSUPPORTED, "out.layout: cuda writes blocked scales only (Q2_SCALES_BLOCKED)");
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const BF16View v{static_cast<const __nv_bfloat16*>(x.data), x.rows, x.cols, "x"};
    DeviceNVFP4 t(x.rows, x.cols);
    if (q == linear::FwdQuant::kRtn)
      quantize_rtn(v, quant::RtnConfig{}, t, workspace(), s);
    else
      quantize_four_over_six(v, t, workspace(), s);
    copy(out.packed, t.packed.get(), t.packed.bytes(), s);
    copy(out.scales, t.scales.get(), t.scales.bytes(), s);
    copy(out.tensor_scale, t.tensor_scale.get(), sizeof(float), s);
  }

  void dequantize(const q2_nvfp4& in, const q2_tensor& out, void* stream) const override {
    if (in.layout != Q2_SCALES_BLOCKED)
      throw Fail(Q2_ERROR_UNSUPPORTED, "in.layout: cuda reads blocked scales only (Q2_SCALES_BLOCKED)");
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    DeviceNVFP4 t(in.rows, in.cols);
    copy(t.packed.get(), in.packed, t.packed.bytes(), s);
    copy(t.scales.get(), in.scales, t.scales.bytes(), s);
    copy(t.tensor_scale.get(), in.tensor_scale, sizeof(float), s);
    dequantize_async(t, static_cast<__nv_bfloat16*>(out.data), s);
  }

 private:
  static void copy(void* to, const void* from, size_t n, cudaStream_t s) {
    check(cudaMemcpyAsync(to, from, n, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (NVFP4 tensor)");
  }
  // The quantizers' status words, made on first use (they allocate device memory).
  static Workspace& workspace() {
    static Workspace ws;
    return ws;
  }
};

}  // namespace
}  // namespace q2::cuda

namespace q2::capi {

const Device& cuda_device() {
  if (!cuda::device_available())
    throw Fail(Q2_ERROR_UNSUPPORTED, "device 'cuda': no usable CUDA device on this machine");
  static const cuda::CudaDevice d;
  return d;
}

}  // namespace q2::capi
