#include "cuda/linear/linear.h"

#include <map>
#include <tuple>
#include <utility>

#include "common/error.h"
#include "cuda/gemm/gemm.h"
#include "cuda/ops/ops.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/tensor.h"
#include "quant/philox.h"
#include "quant/rtn.h"

namespace q2::cuda {

namespace {

using linear::BwdQuant;
using linear::FwdQuant;
using model::DType;
using model::Tensor;

// A grow-only BF16 buffer from the stream-ordered pool: after the first steps it never
// allocates again. Growing synchronizes stream 0 (rare), so the side stream may use the new
// buffer at once; the old one is freed on stream 0, which has joined every earlier user.
class BF16Buffer {
 public:
  BF16Buffer() = default;
  BF16Buffer(const BF16Buffer&) = delete;
  BF16Buffer& operator=(const BF16Buffer&) = delete;
  ~BF16Buffer() {
    if (p_) cudaFreeAsync(p_, 0);
  }
  __nv_bfloat16* get(int64_t n) {
    if (n > n_) {
      if (p_) check(cudaFreeAsync(p_, 0), "cudaFreeAsync");
      p_ = nullptr;
      void* p = nullptr;
      check(cudaMallocAsync(&p, static_cast<size_t>(n) * 2, 0), "cudaMallocAsync of " + std::to_string(n * 2) + " bytes");
      check(cudaStreamSynchronize(0), "cudaStreamSynchronize (new buffer)");
      p_ = static_cast<__nv_bfloat16*>(p);
      n_ = n;
    }
    return p_;
  }
  const __nv_bfloat16* data() const { return p_; }

 private:
  __nv_bfloat16* p_ = nullptr;
  int64_t n_ = 0;
};

// Expansion buffers: kDeqA/kDeqB for the forward product and dgrad, kDeqC/kDeqD for wgrad,
// whose operands are expanded on the side stream while dgrad still reads its own.
enum Slot { kPadded, kWeight, kDeqA, kDeqB, kDeqC, kDeqD, kBf16Slots };
enum AlphaSlot { kFwdAlpha, kDgradAlpha, kWgradAlpha };
using AlphaLinks = std::pair<AlphaLink, AlphaLink>;  // a product's A and B

// Scratch shared by every CUDA linear layer, and the side stream. A layer call runs the
// quantizations that do not feed its next GEMM's other operand on the side stream, so they
// overlap those on stream 0 (the small W-side kernels and wgrad's operands, which fill the
// GPU poorly alone). The side stream is non-blocking (stream 0 never waits for it
// implicitly): each call forks it from stream 0 and joins it back before every GEMM, and
// every call ends joined, so buffers are free again once the GEMM that read them is queued.
class Scratch {
 public:
  static Scratch& get() {
    static Scratch* s = new Scratch;  // never destroyed: freeing after the CUDA context is torn down fails
    return *s;
  }
  __nv_bfloat16* bf16(Slot s, int64_t n) { return bf16_[s].get(n); }
  // One tensor per (operand, shape): layers of different shapes never reallocate each other's.
  DeviceNVFP4& fp4(LinearOperand which, int64_t rows, int64_t cols) {
    DeviceNVFP4& t = fp4_[std::make_tuple(static_cast<int>(which), rows, cols)];
    t.ensure(rows, cols);
    return t;
  }
  cudaStream_t side() const { return side_; }
  // Status and scratch of the quantizers running on `stream` (one Workspace per stream).
  Workspace& ws(cudaStream_t stream) { return stream == side_ ? side_ws_ : ws_; }
  float* amax(cudaStream_t stream) { return amax_.get() + (stream == side_ ? 1 : 0); }
  float* alpha(AlphaSlot s) { return &products_.get()[s].alpha; }
  // The quantizers of a product's A and B compute its alpha (AlphaLink), in a new generation.
  AlphaLinks alpha_links(AlphaSlot s) {
    if (++generation_[s] == 0) ++generation_[s];  // 0 is the zeroed memory's
    ScaleProduct* p = products_.get() + s;
    return {AlphaLink{p, 0, generation_[s]}, AlphaLink{p, 1, generation_[s]}};
  }
  // The side stream starts after everything queued on stream 0 so far.
  void fork() { hand_over(0, side_); }
  // Stream 0 goes on after everything queued on the side stream so far.
  void join() { hand_over(side_, 0); }

 private:
  Scratch() : products_(3), amax_(2) {
    // Zeroed before the side stream's first use.
    check(cudaMemset(products_.get(), 0, products_.bytes()), "cudaMemset of the alpha products");
    check(cudaStreamSynchronize(0), "cudaStreamSynchronize (zeroed alpha products)");
    check(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
  // Each wait is queued right after its record, so one event serves every hand-over.
  void hand_over(cudaStream_t from, cudaStream_t to) {
    check(cudaEventRecord(event_, from), "cudaEventRecord");
    check(cudaStreamWaitEvent(to, event_, 0), "cudaStreamWaitEvent");
  }
  BF16Buffer bf16_[kBf16Slots];
  std::map<std::tuple<int, int64_t, int64_t>, DeviceNVFP4> fp4_;
  Workspace ws_, side_ws_;
  DeviceBuffer<ScaleProduct> products_;  // one per AlphaSlot
  uint32_t generation_[3] = {};
  DeviceBuffer<float> amax_;  // amax scratch of stream 0 and of the side stream
  cudaStream_t side_ = nullptr;
  cudaEvent_t event_ = nullptr;
};

// A GEMM operand: dense BF16 `data`, or the NVFP4 tensor `q`, produced on `stream`, with
// `data` its BF16 expansion when its quantizer wrote one, else product() expands it into
// scratch `slot`; stored with the inner dimension contiguous ([rows, K]) or not ([K, rows]).
// `linked`: its quantizer takes part in the product's alpha (AlphaLink).
struct Operand {
  const __nv_bfloat16* data = nullptr;
  bool k_major = true;
  const DeviceNVFP4* q = nullptr;
  Slot slot = kDeqA;
  cudaStream_t stream = 0;
  bool linked = false;
};

const __nv_bfloat16* bf16_data(const Tensor& t) { return static_cast<const __nv_bfloat16*>(t.data); }

bool dense(BwdQuant q) { return q == BwdQuant::kBf16; }

std::string shape_str(const Tensor& t) { return "[" + std::to_string(t.rows) + ", " + std::to_string(t.cols) + "]"; }

class Layer final : public CudaLinear {
 public:
  Layer(linear::Scheme s, std::string name, bool native) : s_(std::move(s)), name_(std::move(name)), native_(native) {
    check_supported();
  }

  Tensor forward(const Tensor& x, const Tensor& w, bool keep) override {
    if (x.dtype != DType::kBF16 || w.dtype != DType::kF32)
      throw Error("CUDA layer '" + name_ + "': forward needs BF16 x and a float32 w");
    if (x.cols != w.cols)
      throw Error("CUDA layer '" + name_ + "': X is " + shape_str(x) + " but W is " + shape_str(w) +
                  "; inner sizes differ");
    Scratch& sc = Scratch::get();
    const int64_t M = x.rows, K = x.cols, N = w.rows, Mp = padded_rows(M);
    const bool dense_x = s_.x == FwdQuant::kBf16 || s_.save_x_high_precision;
    const __nv_bfloat16* xin = bf16_data(x);
    if (keep && dense_x && Mp != M)
      xin = pad(x, Mp, saved_x_dense_.get(Mp * K));
    else if (Mp != M)
      xin = pad(x, Mp, sc.bf16(kPadded, Mp * K));
    if (keep) {
      // Like autograd, an unpadded dense X is kept by reference, not copied.
      saved_x_ref_ = dense_x && Mp == M ? x : Tensor{};
      saved_x_ = dense_x ? xin : nullptr;
    }
    // X's quantization on stream 0, W's on the side stream, reading the float32 master weights
    // as their BF16 copy (a BF16 W is converted there instead); when the product is emulated,
    // the quantizers expand to BF16 as they go where they can. X's launches go first: after a
    // synchronization the GPU runs each launch as soon as the CPU makes it, and X's chain is
    // the longer one. Every forward quantizer can compute alpha.
    const bool xq = s_.x != FwdQuant::kBf16, wq = s_.w != FwdQuant::kBf16;
    const bool emulated = !native_product(xq, wq);
    const AlphaLinks links = xq && wq ? sc.alpha_links(kFwdAlpha) : AlphaLinks{};
    sc.fork();
    const Operand xo = xq ? forward_operand(s_.x, BF16View{xin, Mp, K, name_ + ".X"},
                                            keep && !dense_x ? &saved_xq_ : nullptr, kDeqA, LinearOperand::kFwdX, 0,
                                            emulated, links.first)
                          : Operand{xin};
    Operand wo;
    if (wq) {
      wo = forward_operand(s_.w, F32View{static_cast<const float*>(w.data), N, K, name_ + ".W"},
                           keep ? &saved_wq_ : nullptr, kDeqB, LinearOperand::kFwdW, sc.side(), emulated, links.second);
    } else {
      __nv_bfloat16* wb = keep ? saved_w_dense_.get(N * K) : sc.bf16(kWeight, N * K);
      ops::convert(static_cast<const float*>(w.data), wb, N * K, sc.side());
      wo = Operand{wb};
    }
    Tensor y = device_tensor(M, N, DType::kBF16, Fill::kNone);  // the GEMM writes all of it
    product(xo, wo, M, N, K, y.data, blas::OutType::kBF16, false, kFwdAlpha);
    if (keep) saved_ = Shapes{M, Mp, N, K, dense_x, s_.w == FwdQuant::kBf16};
    return y;
  }

  Tensor backward(const Tensor& dy, uint64_t seed, Tensor& dw) override {
    const Shapes& z = saved_;
    if (z.M == 0) throw Error("CUDA layer '" + name_ + "': backward called before a forward that kept its operands");
    if (dy.dtype != DType::kBF16 || dy.rows != z.M || dy.cols != z.N)
      throw Error("CUDA layer '" + name_ + "': dY is " + shape_str(dy) + " but the forward output was [" +
                  std::to_string(z.M) + ", " + std::to_string(z.N) + "] (BF16)");
    if (dw.dtype != DType::kF32 || dw.rows != z.N || dw.cols != z.K)
      throw Error("CUDA layer '" + name_ + "': dW is " + shape_str(dw) + ", expected float32 [" +
                  std::to_string(z.N) + ", " + std::to_string(z.K) + "]");
    Scratch& sc = Scratch::get();
    // As linear::Linear::backward: one rotation for all operands, one rounding seed each.
    const uint64_t rot_seed = philox::derive_seed(seed, 0);
    const __nv_bfloat16* e = z.Mp == z.M ? bf16_data(dy) : pad(dy, z.Mp, sc.bf16(kPadded, z.Mp * z.N));
    const BF16View ev{e, z.Mp, z.N, name_ + ".dY"};
    const BF16View wv{saved_w_dense_.data(), z.N, z.K, name_ + ".W"};
    const BF16View xv{saved_x_, z.Mp, z.K, name_ + ".X"};

    // dgrad's dY on stream 0; its W^T, then wgrad's dY^T and X^T, on the side stream, where
    // wgrad's quantizations overlap the dgrad GEMM. dY's launches go first, as X's in forward.
    sc.fork();
    const linear::ProductRecipe& d = s_.dgrad;
    auto along_k = [](BwdQuant q) { return q != BwdQuant::kBf16 && q != BwdQuant::kForward; };
    const bool dgrad_emulated = !native_product(along_k(d.a), along_k(d.b));
    const bool wgrad_emulated = !native_product(along_k(s_.wgrad.a), along_k(s_.wgrad.b));
    const AlphaLinks dl = alpha_links(d, kDgradAlpha), gl = alpha_links(s_.wgrad, kWgradAlpha);
    const Operand da =
        rows_operand(d.a, ev, d.hadamard, rot_seed, philox::derive_seed(seed, 1), dgrad_emulated, dl.first);
    const Operand db = transposed_operand(d.b, d.hadamard, z.w_dense ? nullptr : &saved_wq_, wv, rot_seed,
                                          philox::derive_seed(seed, 2), LinearOperand::kDgradB, kDeqB, sc.side(),
                                          dgrad_emulated, dl.second);
    Tensor dx = device_tensor(z.M, z.K, DType::kBF16, Fill::kNone);  // the GEMM writes all of it
    product(da, db, z.M, z.K, z.N, dx.data, blas::OutType::kBF16, false, kDgradAlpha);

    const linear::ProductRecipe& g = s_.wgrad;
    const Operand wa = transposed_operand(g.a, g.hadamard, nullptr, ev, rot_seed, philox::derive_seed(seed, 3),
                                          LinearOperand::kWgradA, kDeqC, sc.side(), wgrad_emulated, gl.first);
    const Operand wb = transposed_operand(g.b, g.hadamard, z.x_dense ? nullptr : &saved_xq_, xv, rot_seed,
                                          philox::derive_seed(seed, 4), LinearOperand::kWgradB, kDeqD, sc.side(),
                                          wgrad_emulated, gl.second);
    product(wa, wb, z.N, z.K, z.Mp, dw.data, blas::OutType::kF32, true, kWgradAlpha);
    return dx;
  }

  // As the CPU backend: the activation kept for backward (X or X_q), not the weight.
  size_t saved_bytes() const override {
    if (saved_.M == 0) return 0;
    if (saved_.x_dense) return static_cast<size_t>(saved_.Mp * saved_.K) * 2;
    return saved_xq_.packed.bytes() + saved_xq_.scales.bytes() + sizeof(float);
  }

  const DeviceNVFP4* quantized(LinearOperand which) const override { return last_[static_cast<int>(which)]; }

 private:
  struct Shapes {
    int64_t M = 0, Mp = 0, N = 0, K = 0;
    bool x_dense = false, w_dense = false;
  };

  // Rows padded like the CPU backend (CpuLinear) whenever anything is quantized; a pure BF16
  // layer needs no padding.
  int64_t padded_rows(int64_t m) const {
    const bool any = s_.x != FwdQuant::kBf16 || s_.w != FwdQuant::kBf16 || !dense(s_.dgrad.a) ||
                     !dense(s_.dgrad.b) || !dense(s_.wgrad.a) || !dense(s_.wgrad.b);
    if (!any) return m;
    const int64_t multiple = s_.wgrad.hadamard ? s_.wgrad.hadamard : 16;
    return (m + multiple - 1) / multiple * multiple;
  }

  void check_supported() const {
    auto fail = [&](const std::string& why) {
      throw Error("scheme '" + s_.name + "' is not supported by the CUDA linear layer: " + why);
    };
    if (s_.x == FwdQuant::kFp32 || s_.dgrad.a == BwdQuant::kFp32)
      fail("fp32 products need float32 GEMMs (use the CPU backend)");
    for (const linear::ProductRecipe* p : {&s_.dgrad, &s_.wgrad})
      if ((p->a == BwdQuant::kMsEden || p->b == BwdQuant::kMsEden) && p->hadamard != 128)
        fail("the GPU MS-EDEN kernels rotate 128-point chunks, the scheme asks for " + std::to_string(p->hadamard));
    auto sr_rtn_ok = [&](BwdQuant q, int h, const char* what) {
      if ((q == BwdQuant::kSr || q == BwdQuant::kRtn) && h != 0 && h != 16 && h != 32)
        fail(std::string(what) + ": SR/RTN rotations of 16 or 32 points only, the scheme asks for " +
             std::to_string(h));
    };
    sr_rtn_ok(s_.dgrad.a, s_.dgrad.hadamard, "dgrad dY");
    sr_rtn_ok(s_.dgrad.b, s_.dgrad.hadamard, "dgrad W^T");
    sr_rtn_ok(s_.wgrad.a, s_.wgrad.hadamard, "wgrad dY^T");
    sr_rtn_ok(s_.wgrad.b, s_.wgrad.hadamard, "wgrad X^T");
  }

  // Copies t's rows into dst [rows, t.cols] and zeroes the rest.
  static const __nv_bfloat16* pad(const Tensor& t, int64_t rows, __nv_bfloat16* dst) {
    const size_t real = static_cast<size_t>(t.rows * t.cols) * 2, all = static_cast<size_t>(rows * t.cols) * 2;
    check(cudaMemcpyAsync(dst, t.data, real, cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync (pad)");
    if (all > real) check(cudaMemsetAsync(reinterpret_cast<uint8_t*>(dst) + real, 0, all - real, 0), "cudaMemsetAsync (pad)");
    return dst;
  }

  Operand nvfp4_operand(const DeviceNVFP4& q, Slot slot, LinearOperand which, cudaStream_t stream,
                        const __nv_bfloat16* expanded, bool k_major = true, const AlphaLink& link = {}) {
    last_[static_cast<int>(which)] = &q;
    return Operand{expanded, k_major, &q, slot, stream, link.product != nullptr};
  }

  // A backward product's alpha comes from its quantizers when both are MS-EDEN (the kernels
  // that can compute it), else from product()'s own kernel.
  static AlphaLinks alpha_links(const linear::ProductRecipe& p, AlphaSlot slot) {
    if (p.a != BwdQuant::kMsEden || p.b != BwdQuant::kMsEden) return {};
    return Scratch::get().alpha_links(slot);
  }

  // The forward quantizer (not kBf16) of x or w on `stream`, into `saved` (kept for backward) or
  // else scratch; with `expand`, the 1x16 quantizers also write the BF16 expansion into `slot`.
  template <class View>
  Operand forward_operand(FwdQuant q, const View& v, DeviceNVFP4* saved, Slot slot, LinearOperand which,
                          cudaStream_t stream, bool expand, const AlphaLink& link) {
    Scratch& sc = Scratch::get();
    Workspace& ws = sc.ws(stream);
    DeviceNVFP4& dst = saved ? *saved : sc.fp4(which, v.rows, v.cols);
    dst.ensure(v.rows, v.cols);  // before the kernels: reallocating synchronizes stream 0 only
    const bool one_by_16 = q == FwdQuant::kRtn || q == FwdQuant::kFourOverSix;
    __nv_bfloat16* expanded = expand && one_by_16 ? sc.bf16(slot, v.rows * v.cols) : nullptr;
    amax_async(v, ws, stream);
    switch (q) {
      case FwdQuant::kRtn: quantize_rtn_async(v, ws.amax(), quant::RtnConfig{}, dst, stream, expanded, link); break;
      case FwdQuant::kFourOverSix: quantize_four_over_six_async(v, ws.amax(), dst, stream, expanded, link); break;
      case FwdQuant::kRtn16x16:
        quantize_rtn_16x16_async(v, ws.amax(), quant::kSquareBlockScaleMax, dst, stream, link);
        break;
      default: throw Error("unreachable forward quantizer");
    }
    return nvfp4_operand(dst, slot, which, stream, expanded, true, link);
  }

  // Whether a product runs on FP4 tensor cores: both operands NVFP4 along K (the rule product()
  // applies); otherwise its NVFP4 operands are expanded to BF16.
  bool native_product(bool a_fp4_along_k, bool b_fp4_along_k) const {
    return native_ && a_fp4_along_k && b_fp4_along_k;
  }

  // dY [Mp, N] quantized along its rows (dgrad's A), on stream 0; with `expand`, MS-EDEN also
  // writes the BF16 expansion.
  Operand rows_operand(BwdQuant q, const BF16View& e, int hadamard, uint64_t rot_seed, uint64_t seed, bool expand,
                       const AlphaLink& link) {
    if (q == BwdQuant::kBf16) return Operand{e.data};
    Scratch& sc = Scratch::get();
    Workspace& ws = sc.ws(0);
    DeviceNVFP4& dst = sc.fp4(LinearOperand::kDgradA, e.rows, e.cols);
    __nv_bfloat16* expanded = nullptr;
    if (q == BwdQuant::kMsEden) {
      if (expand) expanded = sc.bf16(kDeqA, e.rows * e.cols);
      quantize_ms_eden_async(e, quant::Rht(hadamard, rot_seed), seed, dst, ws, 0, expanded, link);
    } else if (hadamard) {
      quantize_sr_rtn_rows_async(e, sr_rtn(q, hadamard, rot_seed, seed), sc.amax(0), dst);
    } else {
      amax_async(e, ws);
      if (q == BwdQuant::kSr)
        quantize_sr_async(e, ws.amax(), s_.sr_scale_override, seed, dst);
      else
        quantize_rtn_async(e, ws.amax(), quant::RtnConfig{}, dst);
    }
    return nvfp4_operand(dst, kDeqA, LinearOperand::kDgradA, 0, expanded, true, link);
  }

  // The transpose of a [R, C] source (the saved NVFP4 tensor when `fp4` is set, else the dense
  // BF16 `v`) as a [C, R] operand quantized along R, on `stream`; with `expand`, MS-EDEN also
  // writes the BF16 expansion into `slot`.
  Operand transposed_operand(BwdQuant q, int hadamard, const DeviceNVFP4* fp4, const BF16View& v, uint64_t rot_seed,
                             uint64_t seed, LinearOperand which, Slot slot, cudaStream_t stream, bool expand,
                             const AlphaLink& link) {
    if (q == BwdQuant::kBf16) {
      if (!fp4) return Operand{v.data, false, nullptr, slot, stream};
      // Only the NVFP4 tensor was saved (a forward-only scheme): its values rounded to BF16,
      // as the CPU layer rounds them.
      __nv_bfloat16* values = Scratch::get().bf16(slot, fp4->rows * fp4->cols);
      dequantize_async(*fp4, values, stream);
      return Operand{values, false, nullptr, slot, stream};
    }
    if (q == BwdQuant::kForward) {
      return fp4 ? nvfp4_operand(*fp4, slot, which, stream, nullptr, false)
                 : Operand{v.data, false, nullptr, slot, stream};
    }
    Scratch& sc = Scratch::get();
    const int64_t rows = fp4 ? fp4->rows : v.rows, cols = fp4 ? fp4->cols : v.cols;
    DeviceNVFP4& dst = sc.fp4(which, cols, rows);
    Workspace& ws = sc.ws(stream);
    __nv_bfloat16* expanded = nullptr;
    if (q == BwdQuant::kMsEden) {
      const quant::Rht rot(hadamard, rot_seed);
      if (expand) expanded = sc.bf16(slot, rows * cols);
      if (fp4)
        requantize_ms_eden_transposed_async(*fp4, v.name, rot, seed, dst, ws, stream, expanded, link);
      else
        quantize_ms_eden_transposed_async(v, rot, seed, dst, ws, stream, expanded, link);
    } else if (fp4) {
      requantize_sr_rtn_transposed_async(*fp4, v.name, sr_rtn(q, hadamard, rot_seed, seed), sc.amax(stream), dst,
                                         stream);
    } else {
      quantize_sr_rtn_transposed_async(v, sr_rtn(q, hadamard, rot_seed, seed), sc.amax(stream), dst, stream);
    }
    return nvfp4_operand(dst, slot, which, stream, expanded, true, link);
  }

  // The SR or RTN quantizer of quantize_sr_rtn_*_async, rotated by RHT_hadamard(rot_seed) unless 0.
  RotatedSrRtn sr_rtn(BwdQuant q, int hadamard, uint64_t rot_seed, uint64_t seed) const {
    RotatedSrRtn tq;
    tq.stochastic = q == BwdQuant::kSr;
    tq.sr_scale_override = s_.sr_scale_override;
    tq.seed = seed;
    tq.hadamard = hadamard;
    if (hadamard) {
      const quant::Rht rot(hadamard, rot_seed);
      for (int i = 0; i < 4; ++i) tq.sign_bits[i] = rot.sign_bits[i];
    }
    return tq;
  }

  // D[m, n] (+)= alpha sum_k A[m, k] B[n, k] on stream 0, alpha = t_a * t_b (from the operands'
  // quantizers when they are linked, else computed here). When emulating,
  // NVFP4 operands that their quantizer did not expand are expanded on the stream that made
  // them; stream 0 then joins the side stream.
  void product(const Operand& a, const Operand& b, int64_t m, int64_t n, int64_t k, void* d, blas::OutType out,
               bool accumulate, AlphaSlot slot) {
    Scratch& sc = Scratch::get();
    const bool native = native_product(a.q && a.k_major, b.q && b.k_major);
    auto expanded = [&](const Operand& o) -> const __nv_bfloat16* {
      if (native || !o.q || o.data) return o.data;
      __nv_bfloat16* buf = sc.bf16(o.slot, o.q->rows * o.q->cols);
      dequantize_unscaled_async(*o.q, buf, o.stream);
      return buf;
    };
    const __nv_bfloat16 *a_data = expanded(a), *b_data = expanded(b);
    sc.join();
    if (a.linked != b.linked) throw Error("CUDA layer '" + name_ + "': only one operand's quantizer computes alpha");
    const float* ta = a.q ? a.q->tensor_scale.get() : nullptr;
    const float* tb = b.q ? b.q->tensor_scale.get() : nullptr;
    float* alpha = ta || tb ? sc.alpha(slot) : nullptr;
    if (alpha && !a.linked) tensor_scale_product_async(ta, tb, alpha);
    if (native) {
      blas::nvfp4_matmul(blas::Nvfp4Matmul{a.q, b.q, m, n, k, d, out, alpha, accumulate});
      return;
    }
    blas::Matmul p;
    p.a = a_data;
    p.trans_a = !a.k_major;
    p.b = b_data;
    p.trans_b = b.k_major;
    p.d = d;
    p.d_type = out;
    p.m = m;
    p.n = n;
    p.k = k;
    p.accumulate = accumulate;
    p.alpha.device = alpha;
    blas::matmul(p);
  }

  linear::Scheme s_;
  std::string name_;
  bool native_;  // NVFP4 x NVFP4 products on FP4 tensor cores
  Shapes saved_;
  DeviceNVFP4 saved_xq_, saved_wq_;
  BF16Buffer saved_x_dense_, saved_w_dense_;
  Tensor saved_x_ref_;                       // the caller's X when kept by reference
  const __nv_bfloat16* saved_x_ = nullptr;  // the dense X kept for backward (padded)
  const DeviceNVFP4* last_[6] = {};
};

}  // namespace

std::unique_ptr<CudaLinear> make_cuda_linear(const linear::Scheme& scheme, const std::string& name, bool native) {
  return std::make_unique<Layer>(scheme, name, native);
}

}  // namespace q2::cuda
