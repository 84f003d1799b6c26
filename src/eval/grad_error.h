#pragma once
// Gradient-estimation quality of a scheme on one linear layer: `quartet2 grad-error`.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/matrix.h"
#include "linear/scheme.h"
#include "model/backend.h"

namespace q2::eval {

struct LayerOperands {
  Matrix x, w, dy;  // X [M, K], W [N, K], dY [M, N]
};

// X gaussian, W ~ N(0, 1/K), dY Student-t(3) (gradients are heavy-tailed).
LayerOperands default_operands(int64_t m, int64_t k, int64_t n, uint64_t seed);
// x.npy, w.npy, dy.npy from a directory; shapes are checked against each other.
LayerOperands load_operands(const std::string& dir);

// The mean of the first `draws` backward draws against what the backward estimates (relative
// squared error): an unbiased backward's falls like 1/draws, a biased one's levels off at its bias.
struct CurvePoint {
  int draws;
  double rel_err_mean;
};

struct ProductError {
  std::string product;  // fwd, dgrad, wgrad
  double rel_err;       // one draw against the float64 product of the unquantized operands
  double cosine;        // of that draw with the exact product
  double rel_err_mean;  // mean of the draws against what the scheme's backward estimates
  // Backward products only: points at draws 1, 2, 4, ... and the last draw (one pass, prefix
  // means), and bias2, an unbiased estimate of |E[draw] - target|^2 / |target|^2 (NaN for one
  // draw): the inner product of the errors of the first half's and the second half's means,
  // which are independent, so only the bias survives in its expectation. Noise can make it < 0.
  // And bias_along, <mean - target, target> / |target|^2, an unbiased estimate of the bias's
  // component along the target: below 0 the backward shrinks the gradient on average, above 0 it
  // stretches it; its square is at most rel_err_mean (Cauchy-Schwarz).
  std::vector<CurvePoint> curve;
  double bias2 = 0, bias_along = 0;
};

// Bytes grad_error() holds at its peak for X [M, K], W [N, K], dY [M, N], the operands included
// (measured on the CPU backend: about 61, 59 and 41 bytes per element of X, W and dY, the
// backend's copies of X, W, dY and dW and the first half's sums that bias2 keeps included, over
// a fixed 220 MB of the program and its libraries); an Error naming `what` when the sizes overflow.
uint64_t grad_error_bytes(int64_t m, int64_t k, int64_t n, const std::string& what);

// The draws are the backward of `backend`'s linear layer (model::Backend::make_linear) for the
// seeds seeds::experiment_backward(seed, k); the targets come from the CPU reference
// (linear::Linear), whose operands the GPU layer reproduces bit for bit when X, W and dY are
// BF16 values (round_to_bf16). The CPU backend's layer is linear::Linear itself; the GPU's
// returns Y and dX in BF16, which adds their rounding to fwd's and dgrad's errors.
std::vector<ProductError> grad_error(const LayerOperands& ops, const linear::Scheme& scheme, int draws, uint64_t seed,
                                     model::Backend& backend, const std::function<void(int)>& progress = {});

// X, W and dY rounded to BF16 (to nearest even), as a GPU layer reads them.
LayerOperands round_to_bf16(LayerOperands ops);

// A B^T in float64 (OpenBLAS dgemm), A [M, K], B [N, K].
std::vector<double> product_nt_f64(const Matrix& a, const Matrix& b);

}  // namespace q2::eval
