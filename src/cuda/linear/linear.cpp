#include "cuda/linear/linear.h"

#include <utility>

#include "common/error.h"
#include "cuda/linear/product.h"
#include "cuda/linear/scratch.h"
#include "cuda/ops/ops.h"
#include "cuda/quant/quant.h"
#include "cuda/runtime/tensor.h"
#include "quant/rtn.h"
#include "quant/seeds.h"

namespace q2::cuda {

namespace {

using linear::BackwardOperand;
using linear::BwdQuant;
using linear::FwdQuant;
using linear::Kept;
using linear::OperandId;
using linear::Source;
using model::DType;
using model::Tensor;

const __nv_bfloat16* bf16_data(const Tensor& t) { return static_cast<const __nv_bfloat16*>(t.data); }

std::string shape_str(const Tensor& t) { return "[" + std::to_string(t.rows) + ", " + std::to_string(t.cols) + "]"; }

// Throws q2::Error when the plan needs what the CUDA kernels do not provide.
void check_supported(const linear::Plan& p) {
  auto fail = [&](const std::string& why) {
    throw Error("scheme '" + p.scheme + "' is not supported by the CUDA linear layer: " + why);
  };
  if (p.x == FwdQuant::kFp32 || p.exact_dy) fail("fp32 products need float32 GEMMs (use the CPU backend)");
  if (p.wgrad.outlier_split > 0 && (p.wgrad.hadamard != 128 || p.wgrad.a.eden_fallback > 0))
    fail("method.outlier_split has GPU kernels for 128-token chunks without method.eden_fallback");
  for (const BackwardOperand* o : {&p.dgrad.a, &p.dgrad.b, &p.wgrad.a, &p.wgrad.b}) {
    if (o->hadamard_rounds != 1 && o->quant != BwdQuant::kMsEden)
      fail(std::string(linear::to_string(o->id)) +
           ": method.hadamard_rounds = 2 has GPU kernels for MS-EDEN operands only (the CPU backend runs it)");
    if (o->hadamard_rounds != 1 && o->eden_fallback > 0)
      fail("method.eden_fallback with method.hadamard_rounds = 2 has no GPU kernels (the CPU backend runs it)");
    if (o->quant == BwdQuant::kMsEden && o->hadamard != 128)
      fail("the GPU MS-EDEN kernels rotate 128-point chunks, the scheme asks for " + std::to_string(o->hadamard));
    if ((o->quant == BwdQuant::kSr || o->quant == BwdQuant::kRtn) && o->hadamard != 0 && o->hadamard != 16 &&
        o->hadamard != 32)
      fail(std::string(linear::to_string(o->id)) + ": SR/RTN rotations of 16 or 32 points only, the scheme asks for " +
           std::to_string(o->hadamard));
  }
}

// Where each backward operand's work runs: dgrad's dY on stream 0; its W^T, then wgrad's dY^T
// and X^T, on the side stream, where wgrad's quantizations overlap the dgrad GEMM. Each has its
// own expansion slot (dgrad's A and B, wgrad's C and D).
Slot slot_of(OperandId id) {
  switch (id) {
    case OperandId::kDgradA: return kDeqA;
    case OperandId::kDgradB: return kDeqB;
    case OperandId::kWgradA: return kDeqC;
    default: return kDeqD;
  }
}
cudaStream_t stream_of(OperandId id) { return id == OperandId::kDgradA ? cudaStream_t{0} : Scratch::get().side(); }

// NVFP4 quantized along K (a reused forward W_q is used transposed: not along K).
bool fp4_along_k(const BackwardOperand& o) { return o.quantized() && o.quant != BwdQuant::kForward; }

// A backward product's alpha comes from its quantizers when both are MS-EDEN (the kernels that
// can compute it), else from product()'s own kernel.
AlphaLinks alpha_links(const linear::ProductPlan& p, AlphaSlot slot) {
  if (p.a.quant != BwdQuant::kMsEden || p.b.quant != BwdQuant::kMsEden) return {};
  return Scratch::get().alpha_links(slot);
}

class Layer final : public CudaLinear {
 public:
  Layer(const linear::Scheme& s, std::string name, bool native)
      : p_(linear::make_plan(s)), name_(std::move(name)), native_(native) {
    check_supported(p_);
  }

  Tensor forward(const Tensor& x, const Tensor& w, bool keep) override {
    Tensor y = device_tensor(x.rows, w.rows, DType::kBF16, Fill::kNone);  // the GEMM writes all of it
    forward_into(x, w, keep, y.data);
    return y;
  }

  Tensor backward(const Tensor& dy, uint64_t seed, Tensor& dw) override {
    Tensor dx = device_tensor(dy.rows, saved_.K, DType::kBF16, Fill::kNone);  // the GEMM writes all of it
    backward_into(dy, seed, dw, dx.data);
    return dx;
  }

  void forward_into(const Tensor& x, const Tensor& w, bool keep, void* y) override {
    if (x.dtype != DType::kBF16 || w.dtype != DType::kF32)
      throw Error("CUDA layer '" + name_ + "': forward needs BF16 x and a float32 w");
    if (x.cols != w.cols)
      throw Error("CUDA layer '" + name_ + "': X is " + shape_str(x) + " but W is " + shape_str(w) +
                  "; inner sizes differ");
    Scratch& sc = Scratch::get();
    const int64_t M = x.rows, K = x.cols, N = w.rows, Mp = p_.padded_rows(M);
    const bool dense_x = p_.saved_x != Kept::kNvfp4;
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
    const bool xq = p_.x != FwdQuant::kBf16, wq = p_.w != FwdQuant::kBf16;
    const bool emulated = !native_product(native_, xq, wq);
    const AlphaLinks links = xq && wq ? sc.alpha_links(kFwdAlpha) : AlphaLinks{};
    sc.fork();
    const Operand xo = xq ? forward_operand(p_.x, BF16View{xin, Mp, K, name_ + ".X"},
                                            keep && !dense_x ? &saved_xq_ : nullptr, kDeqA, OperandId::kFwdX, 0,
                                            emulated, links.first)
                          : Operand{xin};
    Operand wo;
    if (wq) {
      wo = forward_operand(p_.w, F32View{static_cast<const float*>(w.data), N, K, name_ + ".W"},
                           keep ? &saved_wq_ : nullptr, kDeqB, OperandId::kFwdW, sc.side(), emulated, links.second);
    } else {
      __nv_bfloat16* wb = keep ? saved_w_dense_.get(N * K) : sc.bf16(kWeight, N * K);
      ops::convert(static_cast<const float*>(w.data), wb, N * K, sc.side());
      wo = Operand{wb};
    }
    product(xo, wo, Product{M, N, K, y, blas::OutType::kBF16, false, kFwdAlpha, native_}, name_);
    if (keep) saved_ = Shapes{M, Mp, N, K, dense_x, p_.saved_w != Kept::kNvfp4};
  }

  void backward_into(const Tensor& dy, uint64_t seed, Tensor& dw, void* dx) override {
    const Shapes& z = saved_;
    if (z.M == 0) throw Error("CUDA layer '" + name_ + "': backward called before a forward that kept its operands");
    if (dy.dtype != DType::kBF16 || dy.rows != z.M || dy.cols != z.N)
      throw Error("CUDA layer '" + name_ + "': dY is " + shape_str(dy) + " but the forward output was [" +
                  std::to_string(z.M) + ", " + std::to_string(z.N) + "] (BF16)");
    if (dw.dtype != DType::kF32 || dw.rows != z.N || dw.cols != z.K)
      throw Error("CUDA layer '" + name_ + "': dW is " + shape_str(dw) + ", expected float32 [" +
                  std::to_string(z.N) + ", " + std::to_string(z.K) + "]");
    Scratch& sc = Scratch::get();
    const __nv_bfloat16* e = z.Mp == z.M ? bf16_data(dy) : pad(dy, z.Mp, sc.bf16(kPadded, z.Mp * z.N));
    const Sources src{BF16View{e, z.Mp, z.N, name_ + ".dY"}, BF16View{saved_w_dense_.data(), z.N, z.K, name_ + ".W"},
                      BF16View{saved_x_, z.Mp, z.K, name_ + ".X"}, z.w_dense ? nullptr : &saved_wq_,
                      z.x_dense ? nullptr : &saved_xq_, seed};

    // dY's launches go first, as X's in forward.
    sc.fork();
    const linear::ProductPlan &d = p_.dgrad, &g = p_.wgrad;
    if (dx) {
      const AlphaLinks dl = alpha_links(d, kDgradAlpha);
      const bool dgrad_native = native_product(native_, fp4_along_k(d.a), fp4_along_k(d.b));
      const Operand da = backward_operand(d.a, src, !dgrad_native, dl.first);
      const Operand db = backward_operand(d.b, src, !dgrad_native, dl.second);
      product(da, db, Product{z.M, z.K, z.N, dx, blas::OutType::kBF16, false, kDgradAlpha, native_}, name_);
    }

    const AlphaLinks gl = alpha_links(g, kWgradAlpha);
    const bool wgrad_native = native_product(native_, fp4_along_k(g.a), fp4_along_k(g.b));
    const Sources wsrc = g.outlier_split > 0 ? split_sources(src, g.outlier_split) : src;
    const Operand wa = backward_operand(g.a, wsrc, !wgrad_native, gl.first);
    const Operand wb = backward_operand(g.b, wsrc, !wgrad_native, gl.second);
    product(wa, wb, Product{z.N, z.K, z.Mp, dw.data, blas::OutType::kF32, true, kWgradAlpha, native_}, name_);
    if (g.outlier_split > 0) {  // the taken elements' exact terms, after the product on stream 0
      float* out = static_cast<float*>(dw.data);
      if (src.xq)
        add_dominated_products_async(src.dy, sc.dominated(0), *src.xq, sc.dominated(1), out);
      else
        add_dominated_products_async(src.dy, sc.dominated(0), src.x, sc.dominated(1), out);
    }
  }

  // As the CPU backend: the activation kept for backward (X or X_q), not the weight.
  size_t saved_bytes() const override {
    if (saved_.M == 0) return 0;
    if (saved_.x_dense) return static_cast<size_t>(saved_.Mp * saved_.K) * 2;
    return saved_xq_.packed.bytes() + saved_xq_.scales.bytes() + sizeof(float);
  }

  void release() override {
    saved_ = Shapes{};
    saved_xq_ = DeviceNVFP4{};
    saved_wq_ = DeviceNVFP4{};
    saved_x_dense_.release();
    saved_w_dense_.release();
    saved_x_ref_ = Tensor{};
    saved_x_ = nullptr;
  }

  const DeviceNVFP4* quantized(OperandId which) const override { return last_[static_cast<int>(which)]; }

 private:
  struct Shapes {
    int64_t M = 0, Mp = 0, N = 0, K = 0;
    bool x_dense = false, w_dense = false;
  };

  // What a backward call's operands are made from: dY [Mp, N] and the dense BF16 W [N, K] and
  // X [Mp, K], or the saved NVFP4 W_q and X_q where the forward kept those; and the call's seed.
  struct Sources {
    BF16View dy, w, x;
    const DeviceNVFP4 *wq, *xq;
    uint64_t seed;
  };

  // The outlier split (linear/outlier_split.h) of wgrad's sources on the side stream, where
  // their quantizers run: dY's and X's rests, and the lists of what they gave up in Scratch.
  static Sources split_sources(const Sources& src, double share) {
    Scratch& sc = Scratch::get();
    const cudaStream_t side = sc.side();
    Sources rest = src;
    __nv_bfloat16* dy = sc.bf16(kRestA, src.dy.rows * src.dy.cols);
    split_dominated_transposed_async(src.dy, share, sc.dominated(0), dy, side);
    rest.dy.data = dy;
    if (src.xq) {
      DeviceNVFP4& xq = sc.rest_fp4(src.xq->rows, src.xq->cols);
      split_dominated_transposed_async(*src.xq, src.x.name, share, sc.dominated(1), xq, side);
      rest.xq = &xq;
    } else {
      __nv_bfloat16* x = sc.bf16(kRestB, src.x.rows * src.x.cols);
      split_dominated_transposed_async(src.x, share, sc.dominated(1), x, side);
      rest.x.data = x;
    }
    return rest;
  }

  // Copies t's rows into dst [rows, t.cols] and zeroes the rest.
  static const __nv_bfloat16* pad(const Tensor& t, int64_t rows, __nv_bfloat16* dst) {
    const size_t real = static_cast<size_t>(t.rows * t.cols) * 2, all = static_cast<size_t>(rows * t.cols) * 2;
    check(cudaMemcpyAsync(dst, t.data, real, cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync (pad)");
    if (all > real) check(cudaMemsetAsync(reinterpret_cast<uint8_t*>(dst) + real, 0, all - real, 0), "cudaMemsetAsync (pad)");
    return dst;
  }

  Operand nvfp4_operand(const DeviceNVFP4& q, Slot slot, OperandId which, cudaStream_t stream,
                        const __nv_bfloat16* expanded, bool k_major = true, const AlphaLink& link = {}) {
    last_[static_cast<int>(which)] = &q;
    return Operand{expanded, k_major, &q, slot, stream, link.product != nullptr};
  }

  // The forward quantizer (not kBf16) of x or w on `stream`, into `saved` (kept for backward) or
  // else scratch; with `expand`, the 1x16 quantizers also write the BF16 expansion into `slot`.
  template <class View>
  Operand forward_operand(FwdQuant q, const View& v, DeviceNVFP4* saved, Slot slot, OperandId which,
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

  // One backward operand of the plan on its stream (stream_of); with `expand`, MS-EDEN also
  // writes the BF16 expansion. Only dgrad's dY is used as it is; every other operand is the
  // transpose of dY or of what the forward kept.
  Operand backward_operand(const BackwardOperand& o, const Sources& src, bool expand, const AlphaLink& link) {
    if (!o.transposed) return rows_operand(o, src.dy, src.seed, expand, link);
    const BF16View& v = o.source == Source::kDy ? src.dy : o.source == Source::kSavedW ? src.w : src.x;
    const DeviceNVFP4* fp4 = o.source == Source::kDy ? nullptr : o.source == Source::kSavedW ? src.wq : src.xq;
    return transposed_operand(o, fp4, v, src.seed, expand, link);
  }

  // dY [Mp, N] quantized along its rows (dgrad's A), on stream 0.
  Operand rows_operand(const BackwardOperand& o, const BF16View& e, uint64_t seed, bool expand, const AlphaLink& link) {
    if (o.quant == BwdQuant::kBf16) return Operand{e.data};
    Scratch& sc = Scratch::get();
    Workspace& ws = sc.ws(0);
    const Slot slot = slot_of(o.id);
    DeviceNVFP4& dst = sc.fp4(o.id, e.rows, e.cols);
    __nv_bfloat16* expanded = nullptr;
    if (o.quant == BwdQuant::kMsEden) {
      if (expand) expanded = sc.bf16(slot, e.rows * e.cols);
      quantize_ms_eden_async(e, eden_rotation(o, seed), o.rounding_seed(seed), dst, ws, 0, expanded, link,
                             o.eden_fallback);
    } else if (o.hadamard) {
      quantize_sr_rtn_rows_async(e, sr_rtn(o, seed), sc.amax(0), dst);
    } else {
      amax_async(e, ws);
      if (o.quant == BwdQuant::kSr)
        quantize_sr_async(e, ws.amax(), p_.sr_scale_override, o.rounding_seed(seed), dst);
      else
        quantize_rtn_async(e, ws.amax(), quant::RtnConfig{}, dst);
    }
    return nvfp4_operand(dst, slot, o.id, 0, expanded, true, link);
  }

  // The transpose of a [R, C] source (the saved NVFP4 tensor when `fp4` is set, else the dense
  // BF16 `v`) as a [C, R] operand quantized along R.
  Operand transposed_operand(const BackwardOperand& o, const DeviceNVFP4* fp4, const BF16View& v, uint64_t seed,
                             bool expand, const AlphaLink& link) {
    const Slot slot = slot_of(o.id);
    const cudaStream_t stream = stream_of(o.id);
    if (o.quant == BwdQuant::kBf16) {
      if (!fp4) return Operand{v.data, false, nullptr, slot, stream};
      // Only the NVFP4 tensor was saved (a forward-only scheme): its values rounded to BF16,
      // as the CPU layer rounds them.
      __nv_bfloat16* values = Scratch::get().bf16(slot, fp4->rows * fp4->cols);
      dequantize_async(*fp4, values, stream);
      return Operand{values, false, nullptr, slot, stream};
    }
    if (o.quant == BwdQuant::kForward) {
      return fp4 ? nvfp4_operand(*fp4, slot, o.id, stream, nullptr, false)
                 : Operand{v.data, false, nullptr, slot, stream};
    }
    Scratch& sc = Scratch::get();
    const int64_t rows = fp4 ? fp4->rows : v.rows, cols = fp4 ? fp4->cols : v.cols;
    DeviceNVFP4& dst = sc.fp4(o.id, cols, rows);
    Workspace& ws = sc.ws(stream);
    __nv_bfloat16* expanded = nullptr;
    if (o.quant == BwdQuant::kMsEden) {
      if (expand) expanded = sc.bf16(slot, rows * cols);
      const EdenRotation rot = eden_rotation(o, seed);
      if (fp4)
        requantize_ms_eden_transposed_async(*fp4, v.name, rot, o.rounding_seed(seed), dst, ws, stream, expanded, link,
                                            o.eden_fallback);
      else
        quantize_ms_eden_transposed_async(v, rot, o.rounding_seed(seed), dst, ws, stream, expanded, link,
                                          o.eden_fallback);
    } else if (fp4) {
      requantize_sr_rtn_transposed_async(*fp4, v.name, sr_rtn(o, seed), sc.amax(stream), dst, stream);
    } else {
      quantize_sr_rtn_transposed_async(v, sr_rtn(o, seed), sc.amax(stream), dst, stream);
    }
    return nvfp4_operand(dst, slot, o.id, stream, expanded, true, link);
  }

  // The operand's rotation: its size, with the call's shared rotation seed.
  static quant::Rht rotation(const BackwardOperand& o, uint64_t seed) {
    return quant::Rht(o.hadamard, seeds::linear_stream(seed, seeds::LinearStream::kRotation));
  }
  // An MS-EDEN operand's: with hadamard_rounds = 2, kRotation2's first (as the CPU layer).
  static EdenRotation eden_rotation(const BackwardOperand& o, uint64_t seed) {
    if (o.hadamard_rounds == 1) return rotation(o, seed);
    return EdenRotation(quant::Rht(o.hadamard, seeds::linear_stream(seed, seeds::LinearStream::kRotation2)),
                        rotation(o, seed));
  }

  // The operand's SR or RTN quantizer of quantize_sr_rtn_*_async, rotated unless its hadamard is 0.
  RotatedSrRtn sr_rtn(const BackwardOperand& o, uint64_t seed) const {
    RotatedSrRtn tq;
    tq.stochastic = o.quant == BwdQuant::kSr;
    tq.sr_scale_override = p_.sr_scale_override;
    tq.seed = o.rounding_seed(seed);
    tq.hadamard = o.hadamard;
    if (o.hadamard) {
      const quant::Rht rot = rotation(o, seed);
      for (int i = 0; i < 4; ++i) tq.sign_bits[i] = rot.sign_bits[i];
    }
    return tq;
  }

  linear::Plan p_;
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
