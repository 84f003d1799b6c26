#include "linear/plan.h"

#include "common/error.h"
#include "linear/outlier_split.h"
#include "quant/ms_eden.h"

namespace q2::linear {

namespace {

using seeds::LinearStream;

Kept kept(FwdQuant q) {
  switch (q) {
    case FwdQuant::kFp32: return Kept::kFp32;
    case FwdQuant::kBf16: return Kept::kBf16;
    default: return Kept::kNvfp4;
  }
}

ProductPlan product(const ProductRecipe& r, const Scheme& s, BackwardOperand a, BackwardOperand b) {
  ProductPlan p;
  a.quant = r.a;
  b.quant = r.b;
  for (BackwardOperand* o : {&a, &b})
    if (o->quant == BwdQuant::kMsEden) o->eden_fallback = s.eden_fallback;
  a.hadamard = b.hadamard = p.hadamard = r.hadamard;
  if (r.hadamard) a.hadamard_rounds = b.hadamard_rounds = s.hadamard_rounds;
  p.a = a;
  p.b = b;
  p.inner_multiple = r.hadamard ? r.hadamard : (a.quantized() || b.quantized() ? 16 : 1);
  return p;
}

void validate(const Scheme& s) {
  auto fail = [&](const std::string& why) { throw Error("scheme '" + s.name + "': " + why); };
  bool ms_eden = false;
  for (const ProductRecipe* p : {&s.dgrad, &s.wgrad}) {
    const bool here = p->a == BwdQuant::kMsEden || p->b == BwdQuant::kMsEden;
    if (here && p->hadamard == 0) fail("MS-EDEN needs a Hadamard rotation");
    ms_eden = ms_eden || here;
  }
  if (s.dgrad.b == BwdQuant::kForward && s.dgrad.hadamard != 0) fail("a reused forward W cannot be rotated");
  if (s.wgrad.a == BwdQuant::kForward || s.wgrad.b == BwdQuant::kForward || s.dgrad.a == BwdQuant::kForward)
    fail("only dgrad's W operand can reuse the forward quantization");
  if (!quant::valid_eden_fallback(s.eden_fallback))
    fail("eden_fallback must be 0 (off) or an outlier share in (0, 1), got " + std::to_string(s.eden_fallback));
  if (s.eden_fallback > 0 && !ms_eden) fail("eden_fallback applies to MS-EDEN operands, and there are none");
  if (s.hadamard_rounds != 1 && s.hadamard_rounds != 2)
    fail("hadamard_rounds must be 1 or 2, got " + std::to_string(s.hadamard_rounds));
  if (s.hadamard_rounds == 2 && s.dgrad.hadamard == 0 && s.wgrad.hadamard == 0)
    fail("hadamard_rounds = 2 applies to rotated operands, and there are none");
  if (s.outlier_split != 0 && !valid_outlier_split(s.outlier_split))
    fail("outlier_split must be 0 (off) or an energy share in [0.5, 1), got " + std::to_string(s.outlier_split));
  if (s.outlier_split != 0 && (s.wgrad.a != BwdQuant::kMsEden || s.wgrad.b != BwdQuant::kMsEden))
    fail("outlier_split applies to a wgrad whose two operands are MS-EDEN, and this one's are " +
         std::string(to_string(s.wgrad.a)) + " and " + to_string(s.wgrad.b));
}

}  // namespace

Plan make_plan(const Scheme& s) {
  validate(s);
  Plan p;
  p.scheme = s.name;
  p.x = s.x;
  p.w = s.w;
  p.saved_x_from_input = s.save_x_high_precision;
  p.saved_x = s.save_x_high_precision ? Kept::kBf16 : kept(s.x);
  p.saved_w = kept(s.w);
  p.exact_dy = s.dgrad.a == BwdQuant::kFp32;
  p.dgrad = product(s.dgrad, s, {OperandId::kDgradA, {}, Source::kDy, false, 0, LinearStream::kDgradA},
                    {OperandId::kDgradB, {}, Source::kSavedW, true, 0, LinearStream::kDgradB});
  p.wgrad = product(s.wgrad, s, {OperandId::kWgradA, {}, Source::kDy, true, 0, LinearStream::kWgradA},
                    {OperandId::kWgradB, {}, Source::kSavedX, true, 0, LinearStream::kWgradB});
  p.wgrad.outlier_split = s.outlier_split;
  const bool any = kept(s.x) == Kept::kNvfp4 || kept(s.w) == Kept::kNvfp4 || p.dgrad.a.quantized() ||
                   p.dgrad.b.quantized() || p.wgrad.a.quantized() || p.wgrad.b.quantized();
  p.row_multiple = any ? (s.wgrad.hadamard ? s.wgrad.hadamard : 16) : 1;
  p.sr_scale_override = s.sr_scale_override;
  return p;
}

void Plan::check_backward_shapes(const std::string& layer, int64_t tokens, int64_t out) const {
  auto need = [&](const ProductPlan& p, const char* product, const char* dim, int64_t size, const char* hint) {
    if (size % p.inner_multiple != 0)
      throw Error("layer '" + layer + "' (scheme " + scheme + "): " + product + " quantizes along the " + dim +
                  " dimension, so " + dim + " = " + std::to_string(size) + " must be a multiple of " +
                  std::to_string(p.inner_multiple) + hint);
  };
  need(dgrad, "dgrad", "output-feature", out, "");
  need(wgrad, "wgrad", "token", tokens, " (pad the batch with zero rows)");
}

const char* to_string(OperandId id) {
  switch (id) {
    case OperandId::kFwdX: return "fwd.x";
    case OperandId::kFwdW: return "fwd.w";
    case OperandId::kDgradA: return "dgrad.a(dY)";
    case OperandId::kDgradB: return "dgrad.b(W^T)";
    case OperandId::kWgradA: return "wgrad.a(dY^T)";
    case OperandId::kWgradB: return "wgrad.b(X^T)";
  }
  return "?";
}

const char* to_string(Kept k) {
  switch (k) {
    case Kept::kNvfp4: return "nvfp4";
    case Kept::kBf16: return "bf16";
    case Kept::kFp32: return "fp32";
  }
  return "?";
}

}  // namespace q2::linear
