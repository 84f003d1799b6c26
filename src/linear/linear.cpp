#include "linear/linear.h"

#include "common/error.h"
#include "format/bf16.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "quant/philox.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::linear {

namespace {

Matrix round_bf16(const Matrix& m) {
  Matrix out(m.rows, m.cols);
#pragma omp parallel for
  for (int64_t i = 0; i < m.size(); ++i) out.data[i] = bf16::round(m.data[i]);
  return out;
}

void note(Trace* t, const std::string& s) {
  if (t) t->push_back(s);
}

}  // namespace

Linear::Linear(Scheme scheme, const gemm::Backend& backend, std::string name)
    : scheme_(std::move(scheme)), backend_(backend), name_(std::move(name)) {
  for (const ProductRecipe* p : {&scheme_.dgrad, &scheme_.wgrad})
    if ((p->a == BwdQuant::kMsEden || p->b == BwdQuant::kMsEden) && p->hadamard == 0)
      throw Error("scheme '" + scheme_.name + "': MS-EDEN needs a Hadamard rotation");
  if (scheme_.dgrad.b == BwdQuant::kForward && scheme_.dgrad.hadamard != 0)
    throw Error("scheme '" + scheme_.name + "': a reused forward W cannot be rotated");
  if (scheme_.wgrad.a == BwdQuant::kForward || scheme_.wgrad.b == BwdQuant::kForward ||
      scheme_.dgrad.a == BwdQuant::kForward)
    throw Error("scheme '" + scheme_.name + "': only dgrad's W operand can reuse the forward quantization");
}

gemm::OwnedOperand Linear::quantize_forward(FwdQuant q, const Matrix& m, const std::string& what) const {
  const MatrixRef ref(m, name_ + "." + what);
  switch (q) {
    case FwdQuant::kFp32: return gemm::OwnedOperand::of(m);
    case FwdQuant::kBf16: return gemm::OwnedOperand::of(round_bf16(m));
    case FwdQuant::kRtn: return gemm::OwnedOperand::of(quant::quantize_rtn(ref));
    case FwdQuant::kFourOverSix: return gemm::OwnedOperand::of(quant::quantize_four_over_six(ref));
    case FwdQuant::kRtn16x16: return gemm::OwnedOperand::of(quant::quantize_rtn_16x16(ref));
  }
  throw Error("unreachable forward quantizer");
}

gemm::OwnedOperand Linear::forward_x(const Matrix& x) const { return quantize_forward(scheme_.x, x, "X"); }
gemm::OwnedOperand Linear::forward_w(const Matrix& w) const { return quantize_forward(scheme_.w, w, "W"); }

Matrix Linear::forward(const Matrix& x, const Matrix& w, Saved& saved, Trace* trace) const {
  if (x.cols != w.cols)
    throw Error("layer '" + name_ + "': X is [" + std::to_string(x.rows) + ", " + std::to_string(x.cols) +
                "] but W is [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]; inner sizes differ");
  gemm::OwnedOperand xq = forward_x(x), wq = forward_w(w);
  note(trace, std::string("fwd.x: ") + to_string(scheme_.x));
  note(trace, std::string("fwd.w: ") + to_string(scheme_.w));
  Matrix y = backend_.product_nt(xq.view(), wq.view(), "forward of layer '" + name_ + "'");
  saved.x = scheme_.save_x_high_precision ? gemm::OwnedOperand::of(round_bf16(x)) : std::move(xq);
  saved.w = std::move(wq);
  const char* dense = scheme_.x == FwdQuant::kFp32 ? "fp32" : "bf16";
  note(trace, std::string("saved.x: ") + (saved.x.fp4 ? "nvfp4" : dense));
  note(trace, std::string("saved.w: ") + (saved.w.fp4 ? "nvfp4" : dense));
  return y;
}

gemm::OwnedOperand Linear::quantize_backward(BwdQuant q, const Matrix& m, int hadamard, uint64_t rot_seed,
                                             uint64_t seed, const std::string& what, Trace* trace) const {
  const std::string name = name_ + "." + what;
  note(trace, what + ": " + to_string(q) + (hadamard ? " h" + std::to_string(hadamard) : ""));
  if (q == BwdQuant::kMsEden)
    return gemm::OwnedOperand::of(quant::quantize_ms_eden(MatrixRef(m, name), quant::Rht(hadamard, rot_seed), seed));
  const Matrix rotated = hadamard ? quant::rht_forward(MatrixRef(m, name), quant::Rht(hadamard, rot_seed)) : Matrix();
  const Matrix& src = hadamard ? rotated : m;
  const MatrixRef ref(src, name);
  switch (q) {
    case BwdQuant::kFp32: return gemm::OwnedOperand::of(src);
    case BwdQuant::kBf16: return gemm::OwnedOperand::of(round_bf16(src));
    case BwdQuant::kSr: return gemm::OwnedOperand::of(quant::quantize_sr(ref, scheme_.sr_scale_override, seed));
    case BwdQuant::kRtn: return gemm::OwnedOperand::of(quant::quantize_rtn(ref));
    default: throw Error("unreachable backward quantizer");
  }
}

void Linear::check_backward_shapes(int64_t tokens, int64_t out) const {
  auto need = [&](const ProductRecipe& p, const char* product, const char* dim, int64_t size) {
    auto plain = [](BwdQuant q) { return q == BwdQuant::kBf16 || q == BwdQuant::kFp32; };
    const bool quantized = !plain(p.a) || !plain(p.b);
    const int64_t multiple = p.hadamard ? p.hadamard : (quantized ? 16 : 1);
    if (size % multiple != 0)
      throw Error("layer '" + name_ + "' (scheme " + scheme_.name + "): " + product + " quantizes along the " + dim +
                  " dimension, so " + dim + " = " + std::to_string(size) + " must be a multiple of " +
                  std::to_string(multiple) + (std::string(dim) == "token" ? " (pad the batch with zero rows)" : ""));
  };
  need(scheme_.dgrad, "dgrad", "output-feature", out);
  need(scheme_.wgrad, "wgrad", "token", tokens);
}

Grads Linear::backward(const Matrix& dy, const Saved& saved, uint64_t seed, Trace* trace) const {
  const int64_t tokens = saved.x.rows(), out = saved.w.rows();
  if (dy.rows != tokens || dy.cols != out)
    throw Error("layer '" + name_ + "': dY is [" + std::to_string(dy.rows) + ", " + std::to_string(dy.cols) +
                "] but the forward output was [" + std::to_string(tokens) + ", " + std::to_string(out) + "]");
  check_backward_shapes(tokens, out);
  // One rotation (same signs) for all four operands of this call; distinct rounding seeds.
  const uint64_t rot = philox::derive_seed(seed, 0);
  const bool exact = scheme_.dgrad.a == BwdQuant::kFp32;  // the fp32 scheme keeps dY as is
  const Matrix e = exact ? dy : round_bf16(dy);
  Grads g;

  const ProductRecipe& d = scheme_.dgrad;
  const gemm::OwnedOperand da = quantize_backward(d.a, e, d.hadamard, rot, philox::derive_seed(seed, 1), "dgrad.a(dY)", trace);
  gemm::OwnedOperand db;
  if (d.b == BwdQuant::kForward) {
    note(trace, "dgrad.b(W^T): forward_reuse");
    db = saved.w.fp4 ? gemm::OwnedOperand::of(transpose_square_blocks(*saved.w.fp4, name_ + ".W_q"))
                     : gemm::OwnedOperand::of(transpose(saved.w.dense));
  } else {
    db = quantize_backward(d.b, transpose(saved.w.values()), d.hadamard, rot, philox::derive_seed(seed, 2),
                           "dgrad.b(W^T)", trace);
  }
  g.dx = backend_.product_nt(da.view(), db.view(), "dgrad of layer '" + name_ + "'");

  const ProductRecipe& w = scheme_.wgrad;
  const gemm::OwnedOperand wa =
      quantize_backward(w.a, transpose(e), w.hadamard, rot, philox::derive_seed(seed, 3), "wgrad.a(dY^T)", trace);
  const gemm::OwnedOperand wb = quantize_backward(w.b, transpose(saved.x.values()), w.hadamard, rot,
                                                  philox::derive_seed(seed, 4), "wgrad.b(X^T)", trace);
  g.dw = backend_.product_nt(wa.view(), wb.view(), "wgrad of layer '" + name_ + "'");
  return g;
}

}  // namespace q2::linear
