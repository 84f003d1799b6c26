#pragma once
// Linear-layer quantization schemes as data. A layer computes Y = X W^T (forward),
// dX = dY W (dgrad) and dW = dY^T X (wgrad); a scheme says how each operand of each product
// is quantized and what the forward pass keeps for the backward pass.
#include <string>
#include <vector>

namespace q2::linear {

enum class FwdQuant { kFp32, kBf16, kRtn, kFourOverSix, kRtn16x16 };
// kForward: the forward pass's quantized W, transposed as it is (valid only for 16x16 blocks).
enum class BwdQuant { kFp32, kBf16, kSr, kMsEden, kRtn, kForward };

struct ProductRecipe {
  BwdQuant a = BwdQuant::kBf16, b = BwdQuant::kBf16;
  int hadamard = 0;  // randomized Hadamard size along the product's inner dimension; 0: none
};

struct Scheme {
  std::string name;
  FwdQuant x = FwdQuant::kBf16, w = FwdQuant::kBf16;
  bool save_x_high_precision = false;  // nvidia keeps X itself, not X_q, for wgrad
  ProductRecipe dgrad, wgrad;          // dgrad: A = dY, B = W^T; wgrad: A = dY^T, B = X^T
  float sr_scale_override = 17.0f / 16.0f;
  // > 0: every MS-EDEN operand rounds the chunks whose outlier share exceeds it stochastically
  // instead (quant::MsEdenConfig::eden_fallback); 0: plain MS-EDEN.
  double eden_fallback = 0;
  // 2: every rotated backward operand is rotated twice, by a second randomized Hadamard
  // transform of the same size with its own signs (LinearStream::kRotation2) before the first,
  // shared by both operands of a product so it cancels. A single spike's rotation is flat (a
  // Hadamard row), which MS-EDEN's correction is biased on; the second round makes it Gaussian-like.
  int hadamard_rounds = 1;
  // > 0: wgrad's MS-EDEN operands give up each element that holds more than this share of its
  // chunk's energy, and the product adds those elements' terms exactly (linear/outlier_split.h);
  // 0: off. Meant with hadamard_rounds = 2: the split alone leaves the bias (docs/RESULTS.md).
  double outlier_split = 0;
};

// fp32 (no rounding at all: gradient checks), bf16, quartet2, quartet2_no46, nvidia, sr, tetrajet2, and <scheme>_fwd / <scheme>_bwd
// (forward-only / backward-only quantization). hadamard > 0 replaces the rotation size of
// every product that rotates; eden_fallback > 0 turns on MS-EDEN's fallback (make_plan rejects
// it outside (0, 1) or without MS-EDEN operands); hadamard_rounds 2 rotates twice (make_plan
// rejects other values, and 2 without a rotation). Unknown names throw, listing the known ones.
// outlier_split is left off; callers set it on the result, and make_plan validates it.
Scheme scheme_by_name(const std::string& name, int hadamard = 0, double eden_fallback = 0, int hadamard_rounds = 1);
// The hadamard scheme_by_name accepts: 0 (each product keeps its own size) or a supported
// rotation size (quant::valid_rht_size).
bool valid_hadamard(int hadamard);
std::vector<std::string> scheme_names();

const char* to_string(FwdQuant q);
const char* to_string(BwdQuant q);

}  // namespace q2::linear
