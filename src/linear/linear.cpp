#include "linear/linear.h"

#include "common/error.h"
#include "format/bf16_matrix.h"
#include "linear/outlier_split.h"
#include "quant/hadamard.h"
#include "quant/ms_eden.h"
#include "quant/seeds.h"
#include "quant/rtn.h"
#include "quant/sr.h"

namespace q2::linear {

namespace {

void note(Trace* t, const std::string& s) {
  if (t) t->push_back(s);
}

}  // namespace

Linear::Linear(Scheme scheme, const gemm::Backend& backend, std::string name)
    : scheme_(std::move(scheme)), plan_(make_plan(scheme_)), backend_(backend), name_(std::move(name)) {}

gemm::OwnedOperand Linear::quantize_forward(FwdQuant q, const Matrix& m, const std::string& what) const {
  const MatrixRef ref(m, name_ + "." + what);
  switch (q) {
    case FwdQuant::kFp32: return gemm::OwnedOperand::of(m);
    case FwdQuant::kBf16: return gemm::OwnedOperand::of(bf16::round(m));
    case FwdQuant::kRtn: return gemm::OwnedOperand::of(quant::quantize_rtn(ref));
    case FwdQuant::kFourOverSix: return gemm::OwnedOperand::of(quant::quantize_four_over_six(ref));
    case FwdQuant::kRtn16x16: return gemm::OwnedOperand::of(quant::quantize_rtn_16x16(ref));
  }
  throw Error("unreachable forward quantizer");
}

gemm::OwnedOperand Linear::forward_x(const Matrix& x) const { return quantize_forward(plan_.x, x, "X"); }
gemm::OwnedOperand Linear::forward_w(const Matrix& w) const { return quantize_forward(plan_.w, w, "W"); }

Matrix Linear::forward(const Matrix& x, const Matrix& w, Saved& saved, Trace* trace) const {
  if (x.cols != w.cols)
    throw Error("layer '" + name_ + "': X is [" + std::to_string(x.rows) + ", " + std::to_string(x.cols) +
                "] but W is [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]; inner sizes differ");
  gemm::OwnedOperand xq = forward_x(x), wq = forward_w(w);
  note(trace, std::string("fwd.x: ") + to_string(plan_.x));
  note(trace, std::string("fwd.w: ") + to_string(plan_.w));
  Matrix y = backend_.product_nt(xq.view(), wq.view(), "forward of layer '" + name_ + "'");
  saved.x = plan_.saved_x_from_input ? gemm::OwnedOperand::of(bf16::round(x)) : std::move(xq);
  saved.w = std::move(wq);
  note(trace, std::string("saved.x: ") + to_string(plan_.saved_x));
  note(trace, std::string("saved.w: ") + to_string(plan_.saved_w));
  return y;
}

gemm::OwnedOperand Linear::backward_operand(const BackwardOperand& o, const Matrix& e, const Saved& saved,
                                            uint64_t seed, Trace* trace) const {
  if (o.quant == BwdQuant::kForward) {  // make_plan allows it for the saved W only
    note(trace, std::string(to_string(o.id)) + ": forward_reuse");
    return saved.w.fp4 ? gemm::OwnedOperand::of(transpose_square_blocks(*saved.w.fp4, name_ + ".W_q"))
                       : gemm::OwnedOperand::of(transpose(saved.w.dense));
  }
  return quantize_backward(o, backward_source(o, e, saved), seed, trace);
}

Matrix Linear::backward_source(const BackwardOperand& o, const Matrix& e, const Saved& saved) const {
  const Matrix values = o.source == Source::kDy ? Matrix() : (o.source == Source::kSavedW ? saved.w : saved.x).values();
  const Matrix& source = o.source == Source::kDy ? e : values;
  return o.transposed ? transpose(source) : source;
}

gemm::OwnedOperand Linear::quantize_backward(const BackwardOperand& o, const Matrix& m, uint64_t seed,
                                             Trace* trace) const {
  const std::string what = to_string(o.id);
  const std::string name = name_ + "." + what;
  note(trace, what + ": " + to_string(o.quant) +
                  (o.hadamard ? " h" + std::to_string(o.hadamard) + (o.hadamard_rounds == 2 ? "x2" : "") : ""));
  const quant::Rht rot = o.hadamard ? quant::Rht(o.hadamard, seeds::linear_stream(seed, seeds::LinearStream::kRotation))
                                    : quant::Rht();
  const uint64_t rounding = o.rounding_seed(seed);
  // The second round goes first: the operand rotated by kRotation2's signs, then as before.
  const bool twice = o.hadamard && o.hadamard_rounds == 2;
  const Matrix pre =
      twice ? quant::rht_forward(MatrixRef(m, name),
                                 quant::Rht(o.hadamard, seeds::linear_stream(seed, seeds::LinearStream::kRotation2)))
            : Matrix();
  const Matrix& input = twice ? pre : m;
  if (o.quant == BwdQuant::kMsEden) {
    quant::MsEdenConfig cfg;
    cfg.eden_fallback = o.eden_fallback;
    return gemm::OwnedOperand::of(quant::quantize_ms_eden(MatrixRef(input, name), rot, rounding, cfg));
  }
  const Matrix rotated = o.hadamard ? quant::rht_forward(MatrixRef(input, name), rot) : Matrix();
  const Matrix& src = o.hadamard ? rotated : m;
  const MatrixRef ref(src, name);
  switch (o.quant) {
    case BwdQuant::kFp32: return gemm::OwnedOperand::of(src);
    case BwdQuant::kBf16: return gemm::OwnedOperand::of(bf16::round(src));
    case BwdQuant::kSr: return gemm::OwnedOperand::of(quant::quantize_sr(ref, plan_.sr_scale_override, rounding));
    case BwdQuant::kRtn: return gemm::OwnedOperand::of(quant::quantize_rtn(ref));
    default: throw Error("unreachable backward quantizer");
  }
}

Matrix Linear::backward_dy(const Matrix& dy) const { return plan_.exact_dy ? dy : bf16::round(dy); }

Grads Linear::backward(const Matrix& dy, const Saved& saved, uint64_t seed, Trace* trace) const {
  const int64_t tokens = saved.x.rows(), out = saved.w.rows();
  if (dy.rows != tokens || dy.cols != out)
    throw Error("layer '" + name_ + "': dY is [" + std::to_string(dy.rows) + ", " + std::to_string(dy.cols) +
                "] but the forward output was [" + std::to_string(tokens) + ", " + std::to_string(out) + "]");
  plan_.check_backward_shapes(name_, tokens, out);
  const Matrix e = backward_dy(dy);
  auto run = [&](const ProductPlan& p, const char* product) {
    const std::string what = std::string(product) + " of layer '" + name_ + "'";
    if (p.outlier_split == 0) {
      const gemm::OwnedOperand a = backward_operand(p.a, e, saved, seed, trace);
      const gemm::OwnedOperand b = backward_operand(p.b, e, saved, seed, trace);
      return backend_.product_nt(a.view(), b.view(), what);
    }
    // The outlier split (make_plan allows it where both operands are MS-EDEN).
    const Matrix a = backward_source(p.a, e, saved), b = backward_source(p.b, e, saved);
    const Dominated da = find_dominated(a, p.hadamard, p.outlier_split), db = find_dominated(b, p.hadamard, p.outlier_split);
    note(trace, std::string(product) + ": outlier split");
    const gemm::OwnedOperand qa = quantize_backward(p.a, without_dominated(a, da), seed, trace);
    const gemm::OwnedOperand qb = quantize_backward(p.b, without_dominated(b, db), seed, trace);
    Matrix out = backend_.product_nt(qa.view(), qb.view(), what);
    add_dominated_products(a, da, b, db, out);
    return out;
  };
  Grads g;
  g.dx = run(plan_.dgrad, "dgrad");
  g.dw = run(plan_.wgrad, "wgrad");
  return g;
}

}  // namespace q2::linear
