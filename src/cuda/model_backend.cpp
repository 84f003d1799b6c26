// The CUDA backend: model::Backend over device tensors (parameters, gradients and optimizer
// state float32; activations BF16), the ops of src/cuda/ops, the linear layers of
// src/cuda/linear and BF16 cuBLASLt GEMMs for the LM head. Everything runs on stream 0; only
// the calls that return host values (loss, squared norms, downloads) synchronize. In a
// data-parallel job (world > 1) it owns the NCCL communicator (cuda/dist.h), whose collectives
// (the gradient sums, ZeRO-1's weight all-gather) run on a stream of their own, the gradient sums
// overlapping backward.
#include "cuda/model_backend.h"

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/dist.h"
#include "cuda/gemm/gemm.h"
#include "cuda/linear/linear.h"
#include "cuda/muon.h"
#include "cuda/ops/ops.h"
#include "cuda/runtime/device.h"
#include "cuda/runtime/tensor.h"
#include "format/bf16.h"
#include "model/muon.h"

namespace q2::cuda {

namespace {

using model::DType;
using model::Tensor;
using bf16_t = __nv_bfloat16;

float* f32(const Tensor& t) { return static_cast<float*>(t.data); }
bf16_t* bf(const Tensor& t) { return static_cast<bf16_t*>(t.data); }

// Parameters (and their gradients and optimizer state) are float32, activations BF16.
DType dtype_of(model::Role role) { return role == model::Role::kParam ? DType::kF32 : DType::kBF16; }

void require_dtype(const Tensor& t, DType want, const char* what) {
  if (t.dtype != want)
    throw Error(std::string("CUDA backend: ") + what + " must be " + (want == DType::kF32 ? "float32" : "BF16"));
}

void require_shape(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  if (t.rows != rows || t.cols != cols)
    throw Error(std::string("CUDA backend: ") + what + " is [" + std::to_string(t.rows) + ", " +
                std::to_string(t.cols) + "], expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
}

// Token ids or targets on the device, uploaded per call (a few KiB).
std::shared_ptr<void> upload_ids(const std::vector<uint32_t>& ids, uint32_t** out) {
  Tensor t = device_tensor(1, static_cast<int64_t>(ids.size()), DType::kF32, Fill::kNone);  // 4-byte elements
  check(cudaMemcpyAsync(t.data, ids.data(), ids.size() * sizeof(uint32_t), cudaMemcpyHostToDevice, 0),
        "cudaMemcpyAsync (token ids)");
  *out = static_cast<uint32_t*>(t.data);
  return t.owner;
}

// The kernels' shape: grouped-query (n_kv_heads) and sliding-window attention included.
ops::AttentionShape shape_of(const model::AttentionDims& a) {
  return {a.batch, a.seq, a.n_heads, a.head_dim, a.n_kv_heads, a.window};
}

// What attention's forward keeps for its backward: the log-sum-exp and the output itself
// (shared with the caller's tensor, not copied).
struct AttentionCache {
  Tensor lse, out;
};

// A norm's gain, or null for an empty tensor (a norm without one: the kernels' gainless path).
float* gain(const Tensor& w, int64_t d, const char* what) {
  if (!w.data) return nullptr;
  require_dtype(w, DType::kF32, what);
  require_shape(w, 1, d, what);
  return f32(w);
}

class CudaBackend final : public model::Backend {
 public:
  explicit CudaBackend(const model::BackendOptions& options) {
    const model::DistConfig& dist = options.dist;
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0)
      throw Error(std::string("device 'cuda': no usable CUDA device (") +
                  (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")");
    // Before any allocation: the communicator selects this rank's GPU.
    if (dist.world > 1) comm_ = std::make_unique<Communicator>(dist);
    id_check_ = std::make_unique<ops::IdCheck>();
    native_nvfp4_ = options.gemm != "emulated" && blas::has_native_nvfp4();
    if (options.gemm == "native" && !native_nvfp4_)
      throw Error("device 'cuda': method.gemm = native needs FP4 tensor cores (Blackwell, compute capability 10.x or "
                  "12.x), which this GPU lacks; use 'auto' or 'emulated'");
  }

  std::string name() const override { return "cuda"; }
  std::string describe() const override {
    int device = 0;
    cudaDeviceProp p{};
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    return "cuda: GPU " + std::to_string(device) + ", " + p.name + " (compute capability " + std::to_string(p.major) +
           "." + std::to_string(p.minor) + "); NVFP4 products " +
           (native_nvfp4_ ? "on FP4 tensor cores (cuBLASLt)" : "emulated exactly on BF16 tensor cores");
  }

  Tensor alloc(int64_t rows, int64_t cols, model::Role role) override {
    return device_tensor(rows, cols, dtype_of(role));
  }
  Tensor alloc_uninit(int64_t rows, int64_t cols, model::Role role) override {
    return device_tensor(rows, cols, dtype_of(role), Fill::kNone);
  }

  void upload(const Matrix& src, Tensor& dst) override {
    require_shape(dst, src.rows, src.cols, "upload target");
    if (dst.dtype == DType::kF32) {
      check(cudaMemcpy(dst.data, src.data.data(), src.data.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
      return;
    }
    std::vector<uint16_t> bits(src.data.size());
    for (size_t i = 0; i < bits.size(); ++i) bits[i] = bf16::encode(src.data[i]);
    check(cudaMemcpy(dst.data, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
  }

  Matrix download(const Tensor& t) override {
    Matrix m(t.rows, t.cols);
    if (t.dtype == DType::kF32) {
      check(cudaMemcpy(m.data.data(), t.data, m.data.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
      return m;
    }
    std::vector<uint16_t> bits(m.data.size());
    check(cudaMemcpy(bits.data(), t.data, bits.size() * 2, cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
    for (size_t i = 0; i < bits.size(); ++i) m.data[i] = bf16::decode(bits[i]);
    return m;
  }

  Tensor clone(const Tensor& t) override {
    Tensor c = device_tensor(t.rows, t.cols, t.dtype, Fill::kNone);
    check(cudaMemcpyAsync(c.data, t.data, static_cast<size_t>(t.size()) * dtype_bytes(t.dtype),
                          cudaMemcpyDeviceToDevice, 0),
          "cudaMemcpyAsync (clone)");
    return c;
  }

  void zero(Tensor& t) override {
    check(cudaMemsetAsync(t.data, 0, static_cast<size_t>(t.size()) * dtype_bytes(t.dtype), 0), "cudaMemsetAsync");
  }


  std::unique_ptr<model::LinearOp> make_linear(const linear::Scheme& s, const std::string& name) override {
    return make_cuda_linear(s, name, native_nvfp4_);
  }

  void embedding_forward(const Tensor& table, const std::vector<uint32_t>& ids, Tensor& out) override {
    require_dtype(table, DType::kF32, "embedding table");
    require_dtype(out, DType::kBF16, "embedding output");
    uint32_t* d_ids = nullptr;
    const auto keep = upload_ids(ids, &d_ids);
    ops::embedding_forward(f32(table), table.rows, table.cols, d_ids, static_cast<int64_t>(ids.size()), bf(out),
                           id_check_.get());
    id_check_->throw_if_invalid("embedding", table.rows);
  }

  void embedding_backward(const Tensor& dout, const std::vector<uint32_t>& ids, Tensor& dtable) override {
    uint32_t* d_ids = nullptr;
    const auto keep = upload_ids(ids, &d_ids);
    ops::embedding_backward(bf(dout), d_ids, static_cast<int64_t>(ids.size()), dout.cols, f32(dtable), dtable.rows,
                            id_check_.get());
  }

  // An empty w: a norm without a gain (model.norm_weights = false, model.embed_norm).
  void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override {
    const float* g = gain(w, x.cols, "RMSNorm gain");
    rstd = device_tensor(1, x.rows, DType::kF32, Fill::kNone);
    ops::rmsnorm_forward(bf(x), g, x.rows, x.cols, eps, bf(y), f32(rstd));
  }

  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                        Tensor& dw) override {
    if (!w.data != !dw.data) throw Error("CUDA backend: rmsnorm_backward: a gain and its gradient go together");
    ops::rmsnorm_backward(bf(dy), bf(x), gain(w, x.cols, "RMSNorm gain"), f32(rstd), x.rows, x.cols, bf(dx),
                          gain(dw, x.cols, "RMSNorm gain gradient"));
  }

  void head_rmsnorm_forward(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, double eps,
                            Tensor& rstd) override {
    require_dtype(x, DType::kBF16, "QK norm input");
    rstd = device_tensor(1, x.rows * n_heads, DType::kF32, Fill::kNone);
    ops::head_rmsnorm_forward(bf(x), x.rows, x.cols, col0, n_heads, head_dim, eps, f32(rstd));
  }

  void head_rmsnorm_backward(Tensor& dy, const Tensor& y, int64_t col0, int64_t n_heads, int64_t head_dim,
                             const Tensor& rstd) override {
    require_shape(y, dy.rows, dy.cols, "QK norm output");
    require_shape(rstd, 1, dy.rows * n_heads, "QK norm rstd");
    ops::head_rmsnorm_backward(bf(dy), bf(y), dy.rows, dy.cols, col0, n_heads, head_dim, f32(rstd));
  }

  void rope(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta,
            int direction) override {
    ops::rope(bf(x), x.rows, x.cols, col0, n_heads, head_dim, seq, theta, direction);
  }

  void attention_forward(const Tensor& qkv, const model::AttentionDims& a, Tensor& out, Tensor& cache) override {
    const ops::AttentionShape s = shape_of(a);
    auto c = std::make_shared<AttentionCache>();
    c->lse = device_tensor(a.batch * a.n_heads, a.seq, DType::kF32, Fill::kNone);
    c->out = out;
    ops::attention_forward(bf(qkv), s, bf(out), f32(c->lse));
    cache = c->lse;
    cache.owner = c;
  }

  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& cache, const model::AttentionDims& a,
                          Tensor& dqkv) override {
    const auto& c = *static_cast<const AttentionCache*>(cache.owner.get());
    const ops::AttentionShape s = shape_of(a);
    ops::attention_backward(bf(dout), bf(qkv), bf(c.out), f32(c.lse), s, bf(dqkv));
  }

  void swiglu_forward(const Tensor& h12, Tensor& g) override { ops::swiglu_forward(bf(h12), h12.rows, g.cols, bf(g)); }
  void swiglu_backward(const Tensor& dg, const Tensor& h12, Tensor& dh12) override {
    ops::swiglu_backward(bf(dg), bf(h12), h12.rows, dg.cols, bf(dh12));
  }
  void relu2_forward(const Tensor& h, Tensor& g) override {
    require_shape(g, h.rows, h.cols, "ReLU^2 output");
    ops::relu2_forward(bf(h), h.size(), bf(g));
  }
  void relu2_backward(const Tensor& dg, const Tensor& h, Tensor& dh) override {
    require_shape(dg, h.rows, h.cols, "ReLU^2 output gradient");
    require_shape(dh, h.rows, h.cols, "ReLU^2 input gradient");
    ops::relu2_backward(bf(dg), bf(h), h.size(), bf(dh));
  }

  void residual_mix_forward(const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                            Tensor& y) override {
    check_mix(x, x0, a, b, i);
    require_shape(y, x.rows, x.cols, "resid / x0 mix output");
    ops::residual_mix_forward(bf(x), bf(x0), f32(a), f32(b), i, x.rows, x.cols, bf(y));
  }
  void residual_mix_backward(Tensor& dxy, const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b,
                             int64_t i, Tensor& dx0, Tensor& da, Tensor& db) override {
    check_mix(x, x0, a, b, i);
    require_shape(dxy, x.rows, x.cols, "resid / x0 mix gradient");
    require_shape(dx0, x.rows, x.cols, "x0 gradient");
    require_shape(da, a.rows, a.cols, "resid lambdas gradient");
    require_shape(db, b.rows, b.cols, "x0 lambdas gradient");
    ops::residual_mix_backward(bf(dxy), bf(x), bf(x0), f32(a), f32(b), i, x.rows, x.cols, bf(dx0), f32(da), f32(db));
  }

  void softcap_forward(Tensor& logits, float cap) override {
    require_dtype(logits, DType::kBF16, "softcapped logits");
    ops::softcap_forward(bf(logits), logits.size(), cap);
  }
  void softcap_backward(Tensor& dlogits, const Tensor& capped, float cap) override {
    require_shape(capped, dlogits.rows, dlogits.cols, "softcapped logits");
    ops::softcap_backward(bf(dlogits), bf(capped), dlogits.size(), cap);
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    require_shape(b, a.rows, a.cols, "addend");
    require_shape(out, a.rows, a.cols, "sum");
    ops::add(bf(a), bf(b), a.size(), bf(out));
  }

  // The LM head: BF16 operands (a float32 weight is rounded to a BF16 copy), float32
  // accumulation, output in c's precision.
  void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
              bool accumulate) override {
    Tensor a16 = as_bf16(a), b16 = as_bf16(b);
    blas::Matmul p;
    p.a = bf(a16);
    p.trans_a = trans_a;
    p.b = bf(b16);
    p.trans_b = trans_b;
    p.d = c.data;
    p.d_type = c.dtype == DType::kF32 ? blas::OutType::kF32 : blas::OutType::kBF16;
    p.m = c.rows;
    p.n = c.cols;
    p.k = trans_a ? a.rows : a.cols;
    p.alpha.host = alpha;
    p.accumulate = accumulate;
    blas::matmul(p);
  }

  double cross_entropy(const Tensor& logits, const std::vector<uint32_t>& targets, Tensor* dlogits,
                       float scale) override {
    uint32_t* d_t = nullptr;
    const auto keep = upload_ids(targets, &d_t);
    return ops::cross_entropy(bf(logits), logits.rows, logits.cols, d_t, dlogits ? bf(*dlogits) : nullptr, scale);
  }

  std::vector<double> sum_squares(const std::vector<const Tensor*>& tensors) override {
    std::vector<const float*> x;
    std::vector<int64_t> n;
    for (const Tensor* t : tensors) {
      require_dtype(*t, DType::kF32, "sum_squares input");
      x.push_back(f32(*t));
      n.push_back(t->size());
    }
    std::vector<double> out(tensors.size());
    ops::sum_squares_each(x.data(), n.data(), static_cast<int64_t>(x.size()), out.data());
    return out;
  }

  void scale(Tensor& t, float s) override {
    if (t.dtype == DType::kF32)
      ops::scale(f32(t), t.size(), s);
    else
      ops::scale(bf(t), t.size(), s);
  }

  void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const model::AdamWHyper& h, bool decay) override {
    ops::adamw(f32(w), f32(g), f32(m), f32(v), w.size(), h, decay);
  }

  void muon(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const std::vector<int64_t>& blocks,
            const model::MuonHyper& h) override {
    model::for_each_muon_block(w, g, m, v, blocks, [&](int64_t at, int64_t moment, int64_t rows) {
      muon_step(*this, f32(w) + at, f32(g) + at, f32(m) + at, f32(v) + moment, rows, w.cols, h);
    });
  }

  void synchronize() override { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }
  size_t peak_memory_bytes() override {
    synchronize();
    return device_bytes_in_use();
  }
  size_t peak_allocated_bytes() override {
    synchronize();
    return pool_allocated_peak();
  }
  size_t peak_reserved_bytes() override {
    synchronize();
    return pool_reserved_peak();
  }
  void reset_peak_memory() override { trim_pool(); }
  uint64_t free_memory_bytes() override {
    size_t free = 0, total = 0;
    check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return free;
  }

  model::Collectives& collectives() override { return comm_ ? *comm_ : model::single_rank(); }

 private:
  // x0 of x's shape; a and b float32 vectors holding element i.
  static void check_mix(const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i) {
    require_shape(x0, x.rows, x.cols, "x0");
    require_dtype(a, DType::kF32, "resid lambdas");
    require_dtype(b, DType::kF32, "x0 lambdas");
    if (i < 0 || i >= a.size() || i >= b.size())
      throw Error("CUDA backend: layer " + std::to_string(i) + " is outside the lambdas");
  }

  Tensor as_bf16(const Tensor& t) {
    if (t.dtype == DType::kBF16) return t;
    Tensor c = device_tensor(t.rows, t.cols, DType::kBF16, Fill::kNone);
    ops::convert(f32(t), bf(c), t.size());
    return c;
  }

  std::unique_ptr<ops::IdCheck> id_check_;  // on this rank's GPU, so made after the communicator
  std::unique_ptr<Communicator> comm_;  // world > 1 only
  bool native_nvfp4_ = false;           // FP4 tensor-core GEMMs (model::BackendOptions::gemm)
};

std::unique_ptr<model::Backend> make(const model::BackendOptions& options) {
  if (options.in_process)
    throw Error("device 'cuda' joins its ranks through NCCL (dist.*), not as threads of one process");
  return std::make_unique<CudaBackend>(options);
}

}  // namespace

void register_cuda_backend() { model::register_backend("cuda", &make); }

}  // namespace q2::cuda
