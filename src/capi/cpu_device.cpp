// The CPU half of the C API: float32 host memory through the CPU backend's linear layer
// (linear::Linear with its row padding) and the reference quantizers of src/quant.
#include <cstring>

#include "capi/device.h"
#include "format/scale_layout.h"
#include "quant/rtn.h"

namespace q2::capi {

namespace {

model::Backend& backend() {
  static const std::unique_ptr<model::Backend> b = model::make_cpu_backend();
  return *b;
}

// The caller's tensor copied into a CPU backend tensor.
model::Tensor to_backend(const q2_tensor& t) {
  Matrix m(t.rows, t.cols);
  std::memcpy(m.data.data(), t.data, m.data.size() * sizeof(float));
  model::Tensor out = backend().alloc(t.rows, t.cols, model::Role::kActivation);
  backend().upload(m, out);
  return out;
}

void to_caller(const model::Tensor& t, const q2_tensor& dst) {
  const Matrix m = backend().download(t);
  std::memcpy(dst.data, m.data.data(), m.data.size() * sizeof(float));
}

class CpuRunner final : public LayerRunner {
 public:
  CpuRunner(linear::Scheme scheme, std::string name) : scheme_(std::move(scheme)), name_(std::move(name)) {}

  std::unique_ptr<model::LinearOp> make_op() override { return backend().make_linear(scheme_, name_); }
  bool borrows_input() const override { return false; }

  void forward(model::LinearOp& op, const q2_tensor& x, const q2_tensor& w, const q2_tensor& y, bool keep,
               void*) override {
    to_caller(op.forward(to_backend(x), to_backend(w), keep), y);
  }

  void backward(model::LinearOp& op, const q2_tensor& dy, uint64_t seed, const q2_tensor* dx, const q2_tensor& dw,
                void*) override {
    model::Tensor g = to_backend(dw);
    const model::Tensor d = op.backward(to_backend(dy), seed, g);
    if (dx) to_caller(d, *dx);
    to_caller(g, dw);
  }

 private:
  linear::Scheme scheme_;
  std::string name_;
};

class CpuDevice final : public Device {
 public:
  const char* name() const override { return "cpu"; }
  q2_dtype activation_dtype() const override { return Q2_FLOAT32; }
  bool bf16_weights() const override { return false; }
  void check_memory(const void*, const std::string&) const override {}  // any host pointer may be

  std::unique_ptr<LayerRunner> make_runner(const linear::Scheme& scheme, const std::string& name) const override {
    return std::make_unique<CpuRunner>(scheme, name);
  }

  void quantize(linear::FwdQuant q, const q2_tensor& x, const q2_nvfp4& out, void*) const override {
    const MatrixRef ref(static_cast<const float*>(x.data), x.rows, x.cols, "x");
    const NVFP4Tensor t = q == linear::FwdQuant::kRtn ? quant::quantize_rtn(ref) : quant::quantize_four_over_six(ref);
    std::memcpy(out.packed, t.packed.data(), t.packed.size());
    const std::vector<uint8_t> scales =
        out.layout == Q2_SCALES_BLOCKED ? scales_to_blocked(t.scales, t.rows, t.scale_cols()) : t.scales;
    std::memcpy(out.scales, scales.data(), scales.size());
    std::memcpy(out.tensor_scale, &t.tensor_scale, sizeof(float));
  }

  void dequantize(const q2_nvfp4& in, const q2_tensor& out, void*) const override {
    NVFP4Tensor t(in.rows, in.cols);
    std::memcpy(t.packed.data(), in.packed, t.packed.size());
    std::vector<uint8_t> scales(scale_bytes(in.rows, in.cols, in.layout));
    std::memcpy(scales.data(), in.scales, scales.size());
    t.scales = in.layout == Q2_SCALES_BLOCKED ? scales_from_blocked(scales, t.rows, t.scale_cols()) : scales;
    std::memcpy(&t.tensor_scale, in.tensor_scale, sizeof(float));
    const Matrix m = t.dequantize();
    std::memcpy(out.data, m.data.data(), m.data.size() * sizeof(float));
  }
};

}  // namespace

const Device& cpu_device() {
  static const CpuDevice d;
  return d;
}

}  // namespace q2::capi
