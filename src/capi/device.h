#pragma once
// The device half of the C API (include/quartet2/quartet2.h): each device turns the caller's
// memory into what its backend's linear layer (model::LinearOp) and quantizers take, and back.
// capi.cpp checks the arguments every device shares (pointers, shapes, dtypes, devices) first.
#include <memory>
#include <string>

#include "common/error.h"
#include "linear/scheme.h"
#include "model/backend.h"
#include "quartet2/quartet2.h"

namespace q2::capi {

// A failure with its status: the API's own checks throw it; any other q2::Error becomes
// Q2_ERROR_FAILED. The message names the argument and the problem.
struct Fail : Error {
  q2_status status;
  Fail(q2_status s, const std::string& message) : Error(message), status(s) {}
};

// One layer on one device: the backend's LinearOps of its scheme, and the caller's memory in
// and out of them. `stream` is the caller's (CUDA), ignored on the CPU.
class LayerRunner {
 public:
  virtual ~LayerRunner() = default;
  virtual std::unique_ptr<model::LinearOp> make_op() = 0;
  // Whether an op keeps the caller's x by reference until its backward.
  virtual bool borrows_input() const = 0;
  // What in_features must divide into on this device beyond the plan's own needs (kernels
  // that read rows of packed codes in wider units).
  virtual int64_t in_multiple() const { return 1; }
  virtual void forward(model::LinearOp& op, const q2_tensor& x, const q2_tensor& w, const q2_tensor& y, bool keep,
                       void* stream) = 0;
  // dx may be null (not wanted); dw accumulates.
  virtual void backward(model::LinearOp& op, const q2_tensor& dy, uint64_t seed, const q2_tensor* dx,
                        const q2_tensor& dw, void* stream) = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const char* name() const = 0;
  // The dtype of x, y, dy and dx; and whether w may be BF16 besides float32 (dw is float32).
  virtual q2_dtype activation_dtype() const = 0;
  virtual bool bf16_weights() const = 0;
  // Throws Fail when `data` cannot be this device's memory for `what`.
  virtual void check_memory(const void* data, const std::string& what) const = 0;
  // Throws Fail naming the scheme when this device cannot run it.
  virtual std::unique_ptr<LayerRunner> make_runner(const linear::Scheme& scheme, const std::string& name) const = 0;
  virtual void quantize(linear::FwdQuant quantizer, const q2_tensor& x, const q2_nvfp4& out, void* stream) const = 0;
  virtual void dequantize(const q2_nvfp4& in, const q2_tensor& out, void* stream) const = 0;
};

const Device& cpu_device();
// Throws Fail(Q2_ERROR_UNSUPPORTED) in a library built without CUDA or on a machine without a GPU.
const Device& cuda_device();

// The scale buffer's size in `layout` (format/scale_layout.h for the blocked one).
size_t scale_bytes(int64_t rows, int64_t cols, q2_scale_layout layout);

}  // namespace q2::capi
