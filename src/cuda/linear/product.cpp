#include "cuda/linear/product.h"

#include "common/error.h"

namespace q2::cuda {

void product(const Operand& a, const Operand& b, const Product& p, const std::string& layer) {
  Scratch& sc = Scratch::get();
  const bool native = native_product(p.native, a.q && a.k_major, b.q && b.k_major);
  auto expanded = [&](const Operand& o) -> const __nv_bfloat16* {
    if (native || !o.q || o.data) return o.data;
    __nv_bfloat16* buf = sc.bf16(o.slot, o.q->rows * o.q->cols);
    dequantize_unscaled_async(*o.q, buf, o.stream);
    return buf;
  };
  const __nv_bfloat16 *a_data = expanded(a), *b_data = expanded(b);
  sc.join();
  if (a.linked != b.linked) throw Error("CUDA layer '" + layer + "': only one operand's quantizer computes alpha");
  const float* ta = a.q ? a.q->tensor_scale.get() : nullptr;
  const float* tb = b.q ? b.q->tensor_scale.get() : nullptr;
  float* alpha = ta || tb ? sc.alpha(p.alpha) : nullptr;
  if (alpha && !a.linked) tensor_scale_product_async(ta, tb, alpha);
  if (native) {
    blas::nvfp4_matmul(blas::Nvfp4Matmul{a.q, b.q, p.m, p.n, p.k, p.d, p.out, alpha, p.accumulate});
    return;
  }
  blas::Matmul mm;
  mm.a = a_data;
  mm.trans_a = !a.k_major;
  mm.b = b_data;
  mm.trans_b = b.k_major;
  mm.d = p.d;
  mm.d_type = p.out;
  mm.m = p.m;
  mm.n = p.n;
  mm.k = p.k;
  mm.accumulate = p.accumulate;
  mm.alpha.device = alpha;
  blas::matmul(mm);
}

}  // namespace q2::cuda
