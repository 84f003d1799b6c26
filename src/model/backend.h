#pragma once
// The narrow interface between the model and the hardware: backend-owned 2-D tensors and the
// operations the transformer, the optimizer and the trainer need. The CPU backend runs them
// in float32 on the host; the CUDA backend (docs/ARCHITECTURE.md) on the device. Nothing above
// this interface knows which one runs.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/matrix.h"
#include "linear/scheme.h"
#include "model/attention.h"
#include "model/config.h"

namespace q2::model {

class Collectives;

enum class DType { kF32, kBF16 };

// What a tensor holds: parameters, gradients and optimizer state stay float32 everywhere;
// activations use the backend's activation precision (float32 on the CPU, BF16 on CUDA).
enum class Role { kParam, kActivation };

// A row-major tensor whose memory the backend owns (host or device).
struct Tensor {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::kF32;
  void* data = nullptr;
  std::shared_ptr<void> owner;
  int64_t size() const { return rows * cols; }
};

// One linear layer under a scheme; it keeps what its forward saved for the next backward.
class LinearOp {
 public:
  virtual ~LinearOp() = default;
  // y = x w^T; `keep` saves what the scheme's backward needs.
  virtual Tensor forward(const Tensor& x, const Tensor& w, bool keep) = 0;
  // Returns dx; accumulates dw (+=). `seed` draws the backward's rotations and rounding.
  virtual Tensor backward(const Tensor& dy, uint64_t seed, Tensor& dw) = 0;
  virtual size_t saved_bytes() const = 0;
  // Frees what forward kept (train.recompute: one block's operands at a time).
  virtual void release() = 0;
};

// grad_scale (both optimizers): the factor each gradient is multiplied by before it is used,
// clipping's clip / norm; in the update's own pass, not one of its own over every gradient.
struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t t;  // update count, from 1
  float grad_scale = 1;
};

// The polynomial iteration that orthogonalizes Muon's update (model/muon.h has the coefficients).
enum class MuonOrtho { kQuintic, kPolarExpress };

// One Muon step (model/muon.h describes it); lr before the per-matrix aspect-ratio scale.
struct MuonHyper {
  double lr, momentum, beta2, weight_decay;
  MuonOrtho ortho = MuonOrtho::kQuintic;
  float grad_scale = 1;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // One line for logs: the hardware and how NVFP4 products are computed on it.
  virtual std::string describe() const { return name(); }

  // Tensors (zero-filled on allocation) and host transfers (float32 host matrices).
  virtual Tensor alloc(int64_t rows, int64_t cols, Role role) = 0;
  // A tensor that the next op writes whole, without alloc's zero fill (a pass over its memory:
  // the logits alone are a gigabyte at 16k tokens and a 32k vocabulary). Its contents are
  // undefined until then; the CPU backend fills it with NaN, so that an op which reads it first
  // shows in the CPU tests.
  virtual Tensor alloc_uninit(int64_t rows, int64_t cols, Role role) = 0;
  virtual void upload(const Matrix& src, Tensor& dst) = 0;
  virtual Matrix download(const Tensor& t) = 0;
  virtual Tensor clone(const Tensor& t) = 0;
  virtual void zero(Tensor& t) = 0;

  virtual std::unique_ptr<LinearOp> make_linear(const linear::Scheme& scheme, const std::string& name) = 0;

  virtual void embedding_forward(const Tensor& table, const std::vector<uint32_t>& ids, Tensor& out) = 0;
  virtual void embedding_backward(const Tensor& dout, const std::vector<uint32_t>& ids, Tensor& dtable) = 0;
  // rstd [1, rows] is written by forward and read by backward; backward accumulates dx and dw.
  // An empty w (no data) is a norm without a gain; backward then takes an empty dw.
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) = 0;
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                                Tensor& dw) = 0;
  virtual void rope(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, int64_t seq, double theta,
                    int direction) = 0;
  // `cache` is backend-defined (the CPU keeps the probabilities). qkv [batch * seq, a.qkv_cols()],
  // out [batch * seq, a.q_cols()]; model/attention.h.
  virtual void attention_forward(const Tensor& qkv, const AttentionDims& a, Tensor& out, Tensor& cache) = 0;
  virtual void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& cache, const AttentionDims& a,
                                  Tensor& dqkv) = 0;
  virtual void swiglu_forward(const Tensor& h12, Tensor& g) = 0;
  virtual void swiglu_backward(const Tensor& dg, const Tensor& h12, Tensor& dh12) = 0;

  // The nanochat architecture's ops (model/cpu_ops.h defines each).
  // QK norm: RMSNorm without a gain of each head in columns [col0, col0 + n_heads * head_dim),
  // in place; rstd written by forward; backward in place on dy, from the forward's output y.
  virtual void head_rmsnorm_forward(Tensor& x, int64_t col0, int64_t n_heads, int64_t head_dim, double eps,
                                    Tensor& rstd) = 0;
  virtual void head_rmsnorm_backward(Tensor& dy, const Tensor& y, int64_t col0, int64_t n_heads, int64_t head_dim,
                                     const Tensor& rstd) = 0;
  // g = relu(h)^2; dh overwritten.
  virtual void relu2_forward(const Tensor& h, Tensor& g) = 0;
  virtual void relu2_backward(const Tensor& dg, const Tensor& h, Tensor& dh) = 0;
  // y = a[i] x + b[i] x0, a and b float32 parameter vectors (the resid and x0 lambdas of layer i).
  // Backward: dxy holds dL/dy on entry and dL/dx on exit; dx0 += b[i] dL/dy, da[i] += <dL/dy, x>,
  // db[i] += <dL/dy, x0>.
  virtual void residual_mix_forward(const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b, int64_t i,
                                    Tensor& y) = 0;
  virtual void residual_mix_backward(Tensor& dxy, const Tensor& x, const Tensor& x0, const Tensor& a, const Tensor& b,
                                     int64_t i, Tensor& dx0, Tensor& da, Tensor& db) = 0;
  // logits <- cap tanh(logits / cap) in place; backward: dlogits *= 1 - (capped / cap)^2.
  virtual void softcap_forward(Tensor& logits, float cap) = 0;
  virtual void softcap_backward(Tensor& dlogits, const Tensor& capped, float cap) = 0;

  // out = a + b elementwise (on the GPU in BF16, one rounding); out may be a.
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // c (+)= alpha op(a) op(b), float32 (the LM head).
  virtual void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      bool accumulate) = 0;
  // Summed loss over rows (float64); dlogits, if given, = scale * d(sum)/d logits.
  virtual double cross_entropy(const Tensor& logits, const std::vector<uint32_t>& targets, Tensor* dlogits,
                               float scale) = 0;

  // Optimizer support.
  // Each float32 tensor's sum of squares in float64, read back together: one synchronization
  // on the GPU for a whole model's gradients, not one per tensor.
  virtual std::vector<double> sum_squares(const std::vector<const Tensor*>& tensors) = 0;
  virtual void scale(Tensor& t, float s) = 0;
  virtual void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWHyper& h, bool decay) = 0;
  // Muon on w [R, C] taken as row blocks of `blocks` rows each (the logical matrices of a fused
  // weight, summing to R), each orthogonalized on its own: m [R, C] is the momentum, v [1, n]
  // the factored second moments of the blocks, in block order (muon_second_moment_size).
  virtual void muon(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const std::vector<int64_t>& blocks,
                    const MuonHyper& h) = 0;

  // Measurement support: wait for queued work; the memory the backend holds after the work
  // so far, which is the high-water mark since reset_peak_memory() where freed memory stays
  // reserved (CUDA's pool); 0 where the backend does not track it.
  virtual void synchronize() {}
  virtual size_t peak_memory_bytes() { return 0; }
  // The most bytes the backend's allocations held at once since reset_peak_memory(), without
  // what its allocator reserves beyond them; 0 where the backend does not track it.
  virtual size_t peak_allocated_bytes() { return 0; }
  // The most bytes the allocator reserved at once since reset_peak_memory() (allocations and
  // the gaps their pattern leaves); 0 where the backend does not track it.
  virtual size_t peak_reserved_bytes() { return 0; }
  // What a run can still allocate: the device's free memory, or the host's available memory.
  virtual uint64_t free_memory_bytes() = 0;
  virtual void reset_peak_memory() {}

  // Data parallelism (docs/ARCHITECTURE.md): this rank's place among the replicas and the sums
  // and copies between them; world 1 (single_rank()) unless the backend was made for a job.
  virtual Collectives& collectives();
};

// Where this process sits in a data-parallel job; the default is a single process.
struct DistConfig {
  int rank = 0, world = 1;
  int local_rank = 0;      // picks the GPU on its host
  std::string rendezvous;  // directory shared by all ranks (world > 1)
  double timeout_s = 120;  // start-up and every collective wait at most this long
};

// What a backend is made with besides its device name.
struct BackendOptions {
  DistConfig dist;
  // How NVFP4 products are computed: "emulated" (expanded to BF16, BF16 tensor cores: exact,
  // any GPU), "native" (the GPU's FP4 tensor cores; Blackwell only) or "auto" (native where the
  // GPU has them). The CPU backend always emulates.
  std::string gemm = "auto";
  // A rank of an in-process job (threads as ranks, model/in_process.h), instead of dist: the CPU
  // backend only; not owned.
  Collectives* in_process = nullptr;
};

// Whether `path` names a BackendOptions::gemm value.
bool is_gemm_path(const std::string& path);

// `in_process`: its rank of an in-process job (not owned); null: world 1.
std::unique_ptr<Backend> make_cpu_backend(Collectives* in_process = nullptr);

// Backends by device name ("cpu" always; "cuda" once a CUDA build registered it at start-up),
// so the trainer never names a device itself.
using BackendFactory = std::unique_ptr<Backend> (*)(const BackendOptions&);
void register_backend(const std::string& device, BackendFactory factory);
// Throws q2::Error naming the device and the available ones when it is unknown, or when the
// device cannot run the job (dist, in_process) or the GEMM path asked for.
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& options);
// With the default options (an overload, not a default argument: GCC 12 warns falsely,
// -Wmaybe-uninitialized, where a caller's temporary BackendOptions is destroyed).
std::unique_ptr<Backend> make_backend(const std::string& device);

}  // namespace q2::model
