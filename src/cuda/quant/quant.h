#pragma once
// The GPU side of the quantization layer: CUDA kernels that reproduce the CPU reference in
// src/quant bit for bit (codes, scales, tensor scale). docs/NUMERICS.md is the definition.
// Inputs and outputs are the device formats of cuda/runtime/format.h.
//
// Every launcher is asynchronous on the given stream unless its comment says it synchronizes.
// Kernels that must reject NaN/Inf input raise a flag in the Workspace; the host turns it into
// a q2::Error naming the tensor ("contains NaN or Inf (detected on the GPU)") when the caller
// checks (the synchronizing convenience functions do).
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "cuda/runtime/device.h"
#include "cuda/runtime/format.h"
#include "quant/hadamard.h"
#include "quant/rtn.h"

namespace q2::cuda {

// Device-side status and scratch reused across calls (one per stream at a time).
class Workspace {
 public:
  Workspace();
  // Device float: max |x| of the last quantization's amax_async (valid once the stream reaches
  // it, until the next amax_async or MS-EDEN on this workspace: ask again after each).
  const float* amax() const;
  // Synchronizes the stream; throws q2::Error naming `name` if the last quantization (amax or
  // MS-EDEN) saw NaN or Inf.
  void throw_if_nonfinite(const std::string& name, cudaStream_t stream);

  // Internals for the launchers. Two sets of status words take turns, so that no
  // quantization needs a memset launch: flags() holds the last quantization's words; the next
  // one uses spare_flags() (zeroed), its first kernel zeroes flags() for the one after, and
  // once that kernel is launched next_turn() makes its set current.
  void next_turn() { turn_ ^= 1; }
  void* flags() { return flags_.get() + 4 * turn_; }
  void* spare_flags() { return flags_.get() + 4 * (turn_ ^ 1); }
  float* scratch(int64_t n);  // float32 corrected scales of MS-EDEN, grown on demand

 private:
  DeviceBuffer<uint32_t> flags_;  // two detail::Flags
  int turn_ = 0;
  DeviceBuffer<float> scratch_;
};

// ---- 1. absolute maximum -------------------------------------------------------------------

// max |x| into ws.amax(); NaN/Inf raise the workspace flag (both start cleared).
void amax_async(const BF16View& x, Workspace& ws, cudaStream_t stream = 0);
void amax_async(const F32View& x, Workspace& ws, cudaStream_t stream = 0);
// Synchronizing: returns max |x|, throws if x contains NaN or Inf.
float amax(const BF16View& x, Workspace& ws, cudaStream_t stream = 0);

// ---- a GEMM's alpha from its operands' quantizers -------------------------------------------
// A product of two NVFP4 operands needs alpha = t_a t_b. Quantizers given an AlphaLink compute
// it themselves, sparing the GEMM a one-thread kernel and its launch: each writes its tensor
// scale into t[side] and swaps the link's generation into `generation`; the one that gets its
// own generation back finished second and multiplies the two into alpha. The two quantizers of
// a product get links that differ only in side (0 and 1), with a generation (never 0) that no
// earlier product on this ScaleProduct used, so a pair left half done cannot confuse a later
// one. The ScaleProduct is device memory, zeroed before its first use.
struct ScaleProduct {
  float t[2];
  uint32_t generation;
  float alpha;
};
struct AlphaLink {
  ScaleProduct* product = nullptr;  // none: the quantizer only writes its tensor scale
  int side = 0;
  uint32_t generation = 0;
};

// ---- 2.-4. round-to-nearest family (quant/rtn.cpp, quant/sr.cpp) ---------------------------
// `amax` is a device pointer to max |x| (e.g. ws.amax() after amax_async); the tensor scale is
// quant::tensor_scale(amax, scale_max, val_max), computed on the device. `out` is (re)shaped
// to [x.rows, x.cols].

// With `expanded` (x.rows * x.cols BF16, 16-byte aligned) they also write what
// dequantize_unscaled_async(out, expanded) would, sparing the GEMM emulation that pass.
void quantize_rtn_async(const BF16View& x, const float* amax, const quant::RtnConfig& cfg, DeviceNVFP4& out,
                        cudaStream_t stream = 0, __nv_bfloat16* expanded = nullptr, AlphaLink link = {});
void quantize_rtn_async(const F32View& x, const float* amax, const quant::RtnConfig& cfg, DeviceNVFP4& out,
                        cudaStream_t stream = 0, __nv_bfloat16* expanded = nullptr, AlphaLink link = {});
void quantize_four_over_six_async(const BF16View& x, const float* amax, DeviceNVFP4& out, cudaStream_t stream = 0,
                                  __nv_bfloat16* expanded = nullptr, AlphaLink link = {});
void quantize_four_over_six_async(const F32View& x, const float* amax, DeviceNVFP4& out, cudaStream_t stream = 0,
                                  __nv_bfloat16* expanded = nullptr, AlphaLink link = {});
void quantize_sr_async(const BF16View& x, const float* amax, float scale_override, uint64_t seed, DeviceNVFP4& out,
                       cudaStream_t stream = 0);
// 16x16 square blocks; needs x.rows % 16 == 0.
void quantize_rtn_16x16_async(const BF16View& x, const float* amax, float scale_max, DeviceNVFP4& out,
                              cudaStream_t stream = 0, AlphaLink link = {});
void quantize_rtn_16x16_async(const F32View& x, const float* amax, float scale_max, DeviceNVFP4& out,
                              cudaStream_t stream = 0, AlphaLink link = {});

// Synchronizing conveniences: amax, NaN/Inf check (throws), then the quantizer.
void quantize_rtn(const BF16View& x, const quant::RtnConfig& cfg, DeviceNVFP4& out, Workspace& ws,
                  cudaStream_t stream = 0);
void quantize_four_over_six(const BF16View& x, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream = 0);
void quantize_sr(const BF16View& x, float scale_override, uint64_t seed, DeviceNVFP4& out, Workspace& ws,
                 cudaStream_t stream = 0);
void quantize_rtn_16x16(const BF16View& x, float scale_max, DeviceNVFP4& out, Workspace& ws,
                        cudaStream_t stream = 0);

// ---- 5. dequantization ---------------------------------------------------------------------

// out[r][c] = bf16(e2m1 * e4m3 * tensor_scale), products left to right in float32.
// `out` holds a.rows * a.cols BF16 values, 16-byte aligned.
void dequantize_async(const DeviceNVFP4& a, __nv_bfloat16* out, cudaStream_t stream = 0);
// out[r][c] = e2m1 * e4m3 WITHOUT the tensor scale: every such product is exact in BF16, so a
// BF16 GEMM of two of these with alpha = t_a * t_b (tensor_scale_product_async) is the exact
// NVFP4 product.
void dequantize_unscaled_async(const DeviceNVFP4& a, __nv_bfloat16* out, cudaStream_t stream = 0);
// *alpha = (t_a ? *t_a : 1) * (t_b ? *t_b : 1) (device floats): the GEMM's alpha.
void tensor_scale_product_async(const float* t_a, const float* t_b, float* alpha, cudaStream_t stream = 0);

// ---- 6.-8. MS-EDEN (quant/ms_eden.cpp, default config: per-16 correction, post-hoc scale) ----
// MS-EDEN's rotation: the 128-point Rht r, or with hadamard_rounds = 2 (linear::Scheme) the
// 128-point `first` and then r, each rounded to float32 as quant::rht_forward rounds it (the CPU
// layer's quantize_ms_eden(rht_forward(x, first), r, ...)). An Rht converts to the one-round form.
struct EdenRotation {
  EdenRotation(const quant::Rht& rot) : r(rot) {}  // implicit: an Rht is the one-round rotation
  EdenRotation(const quant::Rht& first_rot, const quant::Rht& rot) : r(rot), first(first_rot), twice(true) {}
  quant::Rht r;
  quant::Rht first;
  bool twice = false;
};

// The rotation must be a 128-point Rht. Pass 1 rotates, rounds and writes float32 corrected
// scales to the workspace scratch plus their maximum; pass 2 aligns the range (t = max/256)
// and rounds the scales stochastically (Philox (sr_seed, kScaleSR, row * cols/16 + group)).
// eden_fallback > 0 (below 1): chunks whose outlier share exceeds it are rounded
// stochastically instead (quant::MsEdenConfig::eden_fallback; codes from (sr_seed, kElementSR));
// with two rounds it is refused (no kernels; the CPU decides between the rounds).
// The async forms raise the workspace's NaN/Inf flag; the plain forms check it (synchronize).
// With `expanded` (rows * cols BF16 of the output, 16-byte aligned) pass 2 also writes what
// dequantize_unscaled_async(out, expanded) would; with `link`, pass 2 takes part in alpha.

// 6. MS-EDEN of x ([rows, cols], cols % 128 == 0), rotated along rows. Where a block's share
// fits in 48 KB of shared memory (up to about 2M 16-groups on an H100), both passes run in
// one cooperative kernel with a grid-wide barrier between them, and the codes and corrected
// scales never leave the chip.
void quantize_ms_eden_async(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out,
                            Workspace& ws, cudaStream_t stream = 0, __nv_bfloat16* expanded = nullptr,
                            AlphaLink link = {}, double eden_fallback = 0);
void quantize_ms_eden(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws,
                      cudaStream_t stream = 0, double eden_fallback = 0);

// 7. MS-EDEN of x^T ([x.cols, x.rows], rotated along x.rows) without materializing the
// transpose. Needs x.rows % 128 == 0 and x.cols % 8 == 0.
void quantize_ms_eden_transposed_async(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out,
                                       Workspace& ws, cudaStream_t stream = 0, __nv_bfloat16* expanded = nullptr,
                                       AlphaLink link = {}, double eden_fallback = 0);
void quantize_ms_eden_transposed(const BF16View& x, const EdenRotation& r, uint64_t sr_seed, DeviceNVFP4& out,
                                 Workspace& ws, cudaStream_t stream = 0, double eden_fallback = 0);

// 8. Requantization: MS-EDEN of dequantize(a)^T ([a.cols, a.rows], rotated along a.rows),
// reading only the packed tensor. Needs a.rows % 128 == 0 and a.cols % 32 == 0.
void requantize_ms_eden_transposed_async(const DeviceNVFP4& a, const std::string& name, const EdenRotation& r,
                                         uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream = 0,
                                         __nv_bfloat16* expanded = nullptr, AlphaLink link = {},
                                         double eden_fallback = 0);
void requantize_ms_eden_transposed(const DeviceNVFP4& a, const std::string& name, const EdenRotation& r,
                                   uint64_t sr_seed, DeviceNVFP4& out, Workspace& ws, cudaStream_t stream = 0,
                                   double eden_fallback = 0);

// ---- 9. SR / RTN of rotated rows and transposes (quant/sr.cpp, quant/rtn.cpp after RHT) ----

// The RTN family's quantizers (quant/rtn.cpp, quant/sr.cpp) applied to the float32 rotated
// transpose RHT_n(x^T) of a BF16 x [rows, cols]: out is [cols, rows], each row rotated in
// chunks of `hadamard` (16 or 32; 0: no rotation) and quantized in 1x16 blocks, exactly as the
// CPU quantizes quant::rht_forward(transpose(x)). Two passes (amax of the rotated values, then
// quantization); `amax` is one device float of scratch. rows % max(16, hadamard) == 0.
struct RotatedSrRtn {
  bool stochastic = false;      // SR (quantize_sr) instead of RTN (quantize_rtn, default config)
  float sr_scale_override = 1;  // SR only
  uint64_t seed = 0;            // SR only
  int hadamard = 0;
  uint32_t sign_bits[4] = {0, 0, 0, 0};  // quant::Rht::sign_bits of the rotation
};
void quantize_sr_rtn_transposed_async(const BF16View& x, const RotatedSrRtn& q, float* amax, DeviceNVFP4& out,
                                      cudaStream_t stream = 0);

// The same quantizers applied to RHT_n(x) along x's own rows: out is [x.rows, x.cols], as the
// CPU quantizes quant::rht_forward(x). x.cols % max(16, hadamard) == 0. The kernel reads x as
// the transpose of x^T (strided loads): a comparison baseline's path, not tuned.
void quantize_sr_rtn_rows_async(const BF16View& x, const RotatedSrRtn& q, float* amax, DeviceNVFP4& out,
                                cudaStream_t stream = 0);

// quantize_sr_rtn_transposed_async of the float32 values of a saved NVFP4 tensor a,
// e2m1 * e4m3 * t left to right (NVFP4Tensor::dequantize, NOT rounded to BF16), decoded from
// the packed tensor.
void requantize_sr_rtn_transposed_async(const DeviceNVFP4& a, const std::string& name, const RotatedSrRtn& q,
                                        float* amax, DeviceNVFP4& out, cudaStream_t stream = 0);

// ---- 10. the outlier split of wgrad's operands (linear/outlier_split.h) --------------------

// What linear::find_dominated takes out of an operand's rows, as lists: row r's count[r] inner
// indices (ascending) are index[r * chunks ...]. Grown on demand, never shrunk.
struct DeviceDominated {
  int64_t rows = 0, chunks = 0;
  DeviceBuffer<int32_t> index;  // [rows, chunks]
  DeviceBuffer<int32_t> count;  // [rows]
  void ensure(int64_t rows, int64_t chunks);
};

// For the operand x^T (x [R, C], R % 128 == 0): linear::find_dominated(transpose(x), 128, share)
// into d, and `rest` (R * C BF16) = x with the taken elements set to +0.
void split_dominated_transposed_async(const BF16View& x, double share, DeviceDominated& d, __nv_bfloat16* rest,
                                      cudaStream_t stream = 0);
// The same for the float32 values of a saved NVFP4 a (NVFP4Tensor::dequantize); `rest` becomes
// a copy of a with the taken codes set to +0 (so it dequantizes to the reference's rest).
void split_dominated_transposed_async(const DeviceNVFP4& a, const std::string& name, double share, DeviceDominated& d,
                                      DeviceNVFP4& rest, cudaStream_t stream = 0);
// out [N, K] (float32) gets linear::add_dominated_products(transpose(dy), da, transpose(x), db, out)
// for dy [R, N] BF16 and x [R, K] (the NVFP4 X_q's values, or BF16), bit for bit.
void add_dominated_products_async(const BF16View& dy, const DeviceDominated& da, const DeviceNVFP4& x,
                                  const DeviceDominated& db, float* out, cudaStream_t stream = 0);
void add_dominated_products_async(const BF16View& dy, const DeviceDominated& da, const BF16View& x,
                                  const DeviceDominated& db, float* out, cudaStream_t stream = 0);

}  // namespace q2::cuda
