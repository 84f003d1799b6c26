// The C API's entry points (include/quartet2/quartet2.h): argument checks every device shares,
// handles, and the translation of C++ failures into a status and a per-thread message. What
// runs is the backends' own linear layers and quantizers (capi/device.h).
#include <mutex>
#include <new>
#include <numeric>
#include <utility>
#include <vector>

#include "capi/device.h"
#include "format/nvfp4.h"
#include "format/scale_layout.h"
#include "linear/plan.h"

using q2::capi::Fail;

namespace q2::capi {

// A layer's scheme, shapes and device, and the ops of finished contexts kept for reuse (a CUDA
// op holds device buffers whose first allocation synchronizes).
struct Layer {
  const Device* device = nullptr;
  std::unique_ptr<LayerRunner> runner;
  q2_linear_info info{};
  std::mutex mutex;
  std::vector<std::unique_ptr<model::LinearOp>> idle;

  std::unique_ptr<model::LinearOp> take() {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      if (!idle.empty()) {
        std::unique_ptr<model::LinearOp> op = std::move(idle.back());
        idle.pop_back();
        return op;
      }
    }
    return runner->make_op();
  }
  void give_back(std::unique_ptr<model::LinearOp> op) {
    const std::lock_guard<std::mutex> lock(mutex);
    idle.push_back(std::move(op));
  }
};

}  // namespace q2::capi

// Contexts share their layer, so destroying the layer first is safe.
struct q2_linear {
  std::shared_ptr<q2::capi::Layer> layer;
};
struct q2_context {
  std::shared_ptr<q2::capi::Layer> layer;
  std::unique_ptr<q2::model::LinearOp> op;
  int64_t tokens = 0;
};

namespace q2::capi {

size_t scale_bytes(int64_t rows, int64_t cols, q2_scale_layout layout) {
  return static_cast<size_t>(layout == Q2_SCALES_BLOCKED ? blocked_scale_bytes(rows, cols / kBlock)
                                                         : rows * (cols / kBlock));
}

namespace {

thread_local std::string last_error;

q2_status failed(q2_status s, const char* fn, const std::string& message) {
  last_error = std::string(fn) + ": " + message;
  return s;
}

// Runs `body`, turning what it throws into a status and this thread's message.
template <class F>
q2_status guard(const char* fn, F&& body) {
  try {
    body();
    return Q2_OK;
  } catch (const Fail& e) {
    return failed(e.status, fn, e.what());
  } catch (const std::bad_alloc&) {
    return failed(Q2_ERROR_OUT_OF_MEMORY, fn, "out of host memory");
  } catch (const std::exception& e) {
    return failed(Q2_ERROR_FAILED, fn, e.what());
  } catch (...) {
    return failed(Q2_ERROR_FAILED, fn, "unknown C++ exception");
  }
}

template <class T>
T& need(T* p, const char* what) {
  if (!p) throw Fail(Q2_ERROR_NULL_POINTER, std::string(what) + " is null");
  return *p;
}

const Device& device(q2_device d) {
  switch (d) {
    case Q2_DEVICE_CPU: return cpu_device();
    case Q2_DEVICE_CUDA: return cuda_device();
    default: break;
  }
  throw Fail(Q2_ERROR_INVALID_ARGUMENT,
             "device " + std::to_string(static_cast<int>(d)) + " is not a q2_device (0: cpu, 1: cuda)");
}

const char* device_name(q2_device d) { return d == Q2_DEVICE_CPU ? "cpu" : d == Q2_DEVICE_CUDA ? "cuda" : "unknown"; }
const char* dtype_name(q2_dtype t) { return t == Q2_FLOAT32 ? "float32" : t == Q2_BFLOAT16 ? "bfloat16" : "unknown"; }

std::string shape(int64_t rows, int64_t cols) { return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]"; }

// What a tensor argument holds, for its dtype rule.
enum class Role { kActivation, kWeight, kWeightGrad };

// Checks t's pointer, device, dtype and (where given: >= 0) shape for `dev`.
void check_tensor(const q2_tensor& t, const char* what, const Device& dev, q2_device on, Role role, int64_t rows,
                  int64_t cols) {
  if (!t.data) throw Fail(Q2_ERROR_NULL_POINTER, std::string(what) + ".data is null");
  if (t.device != on)
    throw Fail(Q2_ERROR_WRONG_DEVICE, std::string(what) + " is on device '" + device_name(t.device) +
                                          "' but the call runs on '" + dev.name() + "'");
  const bool ok = role == Role::kWeightGrad ? t.dtype == Q2_FLOAT32
                  : role == Role::kWeight   ? t.dtype == Q2_FLOAT32 || (dev.bf16_weights() && t.dtype == Q2_BFLOAT16)
                                            : t.dtype == dev.activation_dtype();
  if (!ok) {
    const std::string wanted = role == Role::kWeightGrad ? "float32"
                               : role == Role::kWeight   ? (dev.bf16_weights() ? "float32 or bfloat16" : "float32")
                                                         : dtype_name(dev.activation_dtype());
    throw Fail(Q2_ERROR_INVALID_ARGUMENT, std::string(what) + " is " + dtype_name(t.dtype) + "; on '" + dev.name() +
                                              "' it must be " + wanted);
  }
  if (t.rows < 1 || t.cols < 1 || (rows >= 0 && t.rows != rows) || (cols >= 0 && t.cols != cols)) {
    auto dim = [](int64_t n, const char* any) { return n >= 0 ? std::to_string(n) : std::string(any); };
    throw Fail(Q2_ERROR_INVALID_ARGUMENT, std::string(what) + " is " + shape(t.rows, t.cols) + ", expected [" +
                                              dim(rows, "rows >= 1") + ", " + dim(cols, "cols >= 1") + "]");
  }
  dev.check_memory(t.data, what);
}

// Throws when `out` shares memory with `in`: the CUDA layer writes outputs in place while it
// may still read its inputs.
void check_disjoint(const q2_tensor& out, const char* out_name, const q2_tensor& in, const char* in_name) {
  auto span = [](const q2_tensor& t) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data);
    return std::make_pair(begin, begin + static_cast<uintptr_t>(t.rows * t.cols) * (t.dtype == Q2_BFLOAT16 ? 2 : 4));
  };
  const auto o = span(out), i = span(in);
  if (o.first < i.second && i.first < o.second)
    throw Fail(Q2_ERROR_INVALID_ARGUMENT, std::string(out_name) + " overlaps " + in_name);
}

// in_features and out_features for `plan` on `runner`'s device: the forward's NVFP4 blocks, the
// backward's rotation or blocks along out_features (Plan::check_backward_shapes), the device's own.
q2_linear_info layer_info(const linear::Plan& p, const LayerRunner& runner, int64_t in, int64_t out, q2_device d) {
  q2_linear_info info{};
  info.in_features = in;
  info.out_features = out;
  info.device = d;
  auto fp4 = [](linear::FwdQuant q) { return q != linear::FwdQuant::kBf16 && q != linear::FwdQuant::kFp32; };
  const bool fwd_fp4 = fp4(p.x) || fp4(p.w);
  info.in_multiple = std::lcm<int64_t>(fwd_fp4 ? kBlock : 1, runner.in_multiple());
  info.out_multiple = p.w == linear::FwdQuant::kRtn16x16 ? std::lcm<int64_t>(p.dgrad.inner_multiple, kBlock)
                                                          : p.dgrad.inner_multiple;
  info.token_multiple = p.row_multiple;
  info.borrows_input = runner.borrows_input() ? 1 : 0;
  return info;
}

void check_nvfp4(const q2_nvfp4& q, const char* what, const Device& dev, q2_device on) {
  if (q.device != on)
    throw Fail(Q2_ERROR_WRONG_DEVICE, std::string(what) + " is on device '" + device_name(q.device) +
                                          "' but the call runs on '" + dev.name() + "'");
  if (!q.packed) throw Fail(Q2_ERROR_NULL_POINTER, std::string(what) + ".packed is null");
  if (!q.scales) throw Fail(Q2_ERROR_NULL_POINTER, std::string(what) + ".scales is null");
  if (!q.tensor_scale) throw Fail(Q2_ERROR_NULL_POINTER, std::string(what) + ".tensor_scale is null");
  if (q.rows < 1 || q.cols < 1 || q.cols % kBlock != 0)
    throw Fail(Q2_ERROR_INVALID_ARGUMENT, std::string(what) + " is " + shape(q.rows, q.cols) +
                                              "; NVFP4 needs rows >= 1 and cols a positive multiple of 16");
  if (q.layout != Q2_SCALES_ROW_MAJOR && q.layout != Q2_SCALES_BLOCKED)
    throw Fail(Q2_ERROR_INVALID_ARGUMENT, std::string(what) + ".layout " + std::to_string(static_cast<int>(q.layout)) +
                                              " is not a q2_scale_layout (0: row-major, 1: blocked)");
  for (const void* p : {q.packed, q.scales, q.tensor_scale}) dev.check_memory(p, what);
}

}  // namespace
}  // namespace q2::capi

using namespace q2;
using namespace q2::capi;

extern "C" {

const char* q2_last_error(void) { return capi::last_error.c_str(); }
int q2_api_version(void) { return Q2_API_VERSION; }

q2_status q2_linear_create(const char* scheme, int64_t in_features, int64_t out_features, q2_device d,
                           q2_linear** out) {
  return guard(__func__, [&] {
    need(out, "layer (the output handle)");
    *out = nullptr;
    need(scheme, "scheme");
    const Device& dev = device(d);
    if (in_features < 1 || out_features < 1)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, "in_features = " + std::to_string(in_features) + " and out_features = " +
                                                std::to_string(out_features) + " must both be >= 1");
    linear::Scheme s;
    try {
      s = linear::scheme_by_name(scheme);
    } catch (const Error& e) {
      throw Fail(Q2_ERROR_UNKNOWN_SCHEME, e.what());
    }
    auto layer = std::make_shared<Layer>();
    layer->device = &dev;
    layer->runner = dev.make_runner(s, std::string("q2_linear(") + scheme + ")");
    layer->info = layer_info(linear::make_plan(s), *layer->runner, in_features, out_features, d);
    const q2_linear_info& i = layer->info;
    if (in_features % i.in_multiple != 0 || out_features % i.out_multiple != 0)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT,
                 std::string("scheme '") + scheme + "' on '" + dev.name() + "' needs in_features a multiple of " +
                     std::to_string(i.in_multiple) + " and out_features a multiple of " + std::to_string(i.out_multiple) +
                     ", got in_features = " + std::to_string(in_features) + ", out_features = " +
                     std::to_string(out_features));
    *out = new q2_linear{std::move(layer)};
  });
}

void q2_linear_destroy(q2_linear* layer) { delete layer; }

q2_status q2_linear_get_info(const q2_linear* layer, q2_linear_info* info) {
  return guard(__func__, [&] { need(info, "info") = need(layer, "layer").layer->info; });
}

q2_status q2_linear_forward(q2_linear* layer, const q2_tensor* x, const q2_tensor* w, const q2_tensor* y,
                            q2_context** ctx, void* stream) {
  return guard(__func__, [&] {
    if (ctx) *ctx = nullptr;
    Layer& l = *need(layer, "layer").layer;
    const q2_linear_info& i = l.info;
    const Device& dev = *l.device;
    check_tensor(need(x, "x"), "x", dev, i.device, Role::kActivation, -1, i.in_features);
    check_tensor(need(w, "w"), "w", dev, i.device, Role::kWeight, i.out_features, i.in_features);
    check_tensor(need(y, "y"), "y", dev, i.device, Role::kActivation, x->rows, i.out_features);
    check_disjoint(*y, "y", *x, "x");
    check_disjoint(*y, "y", *w, "w");
    std::unique_ptr<model::LinearOp> op = l.take();
    try {
      l.runner->forward(*op, *x, *w, *y, ctx != nullptr, stream);
    } catch (...) {
      l.give_back(std::move(op));
      throw;
    }
    if (ctx)
      *ctx = new q2_context{layer->layer, std::move(op), x->rows};
    else
      l.give_back(std::move(op));
  });
}

q2_status q2_linear_backward(q2_context* ctx, const q2_tensor* dy, uint64_t seed, const q2_tensor* dx,
                             const q2_tensor* dw, void* stream) {
  return guard(__func__, [&] {
    q2_context& c = need(ctx, "ctx");
    const q2_linear_info& i = c.layer->info;
    const Device& dev = *c.layer->device;
    check_tensor(need(dy, "dy"), "dy", dev, i.device, Role::kActivation, c.tokens, i.out_features);
    if (dx) {
      check_tensor(*dx, "dx", dev, i.device, Role::kActivation, c.tokens, i.in_features);
      check_disjoint(*dx, "dx", *dy, "dy");
    }
    check_tensor(need(dw, "dw"), "dw", dev, i.device, Role::kWeightGrad, i.out_features, i.in_features);
    c.layer->runner->backward(*c.op, *dy, seed, dx, *dw, stream);
  });
}

q2_status q2_context_saved_bytes(const q2_context* ctx, size_t* bytes) {
  return guard(__func__, [&] { need(bytes, "bytes") = need(ctx, "ctx").op->saved_bytes(); });
}

void q2_context_destroy(q2_context* ctx) {
  if (!ctx) return;
  ctx->layer->give_back(std::move(ctx->op));
  delete ctx;
}

q2_status q2_nvfp4_scale_bytes(int64_t rows, int64_t cols, q2_scale_layout layout, size_t* bytes) {
  return guard(__func__, [&] {
    need(bytes, "bytes");
    if (rows < 1 || cols < 1 || cols % kBlock != 0)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, shape(rows, cols) + ": NVFP4 needs rows >= 1 and cols a positive multiple of 16");
    if (layout != Q2_SCALES_ROW_MAJOR && layout != Q2_SCALES_BLOCKED)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, "layout " + std::to_string(static_cast<int>(layout)) +
                                                " is not a q2_scale_layout (0: row-major, 1: blocked)");
    *bytes = scale_bytes(rows, cols, layout);
  });
}

q2_status q2_nvfp4_quantize(q2_quantizer quantizer, const q2_tensor* x, const q2_nvfp4* out, void* stream) {
  return guard(__func__, [&] {
    if (quantizer != Q2_QUANT_RTN && quantizer != Q2_QUANT_FOUR_OVER_SIX)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, "quantizer " + std::to_string(static_cast<int>(quantizer)) +
                                                " is not a q2_quantizer (0: rtn, 1: four_over_six)");
    const Device& dev = device(need(x, "x").device);
    check_tensor(*x, "x", dev, x->device, Role::kActivation, -1, -1);
    check_nvfp4(need(out, "out"), "out", dev, x->device);
    if (out->rows != x->rows || out->cols != x->cols)
      throw Fail(Q2_ERROR_INVALID_ARGUMENT, "out is " + shape(out->rows, out->cols) + " but x is " + shape(x->rows, x->cols));
    dev.quantize(quantizer == Q2_QUANT_RTN ? linear::FwdQuant::kRtn : linear::FwdQuant::kFourOverSix, *x, *out, stream);
  });
}

q2_status q2_nvfp4_dequantize(const q2_nvfp4* in, const q2_tensor* out, void* stream) {
  return guard(__func__, [&] {
    const Device& dev = device(need(in, "in").device);
    check_nvfp4(*in, "in", dev, in->device);
    check_tensor(need(out, "out"), "out", dev, in->device, Role::kActivation, in->rows, in->cols);
    dev.dequantize(*in, *out, stream);
  });
}

}  // extern "C"
