/* quartet2's C API: NVFP4 linear layers (the Quartet II recipe and the other schemes of
 * `quartet2 grad-error`) and NVFP4 quantization, for programs outside quartet2 (the Python
 * package in python/quartet2 loads it through ctypes). Plain C: opaque handles, status codes,
 * no C++ types or exceptions cross it. Library: libquartet2_c (CMake target quartet2_c).
 *
 * Devices
 *   Q2_DEVICE_CPU   host memory; every tensor float32. Always available: the reference.
 *   Q2_DEVICE_CUDA  device memory of the current CUDA device, 16-byte aligned; activations and
 *                   their gradients (x, y, dy, dx) BF16, the weight float32 or BF16 (quantized
 *                   from its BF16 rounding either way), the weight gradient float32. Only in a
 *                   library built with CUDA (else Q2_ERROR_UNSUPPORTED).
 *
 * Streams (CUDA). The layer's work is ordered on the legacy default stream (stream 0), with an
 * internal side stream that joins it before each call returns. A call given a non-null
 * `stream` (a cudaStream_t) makes stream 0 wait for the work queued on that stream so far and
 * makes that stream wait for the call's work, through events: results are ready in stream
 * order on the caller's stream. Calls return before the GPU finishes, except that the first
 * call of a shape allocates buffers, which synchronizes the device.
 *
 * Threads: q2_last_error is per thread. CUDA layers share process-wide scratch: make CUDA calls
 * from one thread at a time. A CPU layer may be used by one thread at a time.
 *
 * Shapes: a linear layer computes y = x w^T with x [tokens, in_features], w [out_features,
 * in_features], y [tokens, out_features]; backward dx = dy w and dw += dy^T x. Outputs are
 * written in place: y must overlap neither x nor w, and dx neither dy nor a borrowed x
 * (q2_linear_info.borrows_input). A scheme that
 * quantizes its forward operands needs in_features % 16 == 0; out_features must be a multiple
 * of the backward's rotation size (128 for quartet2) or of 16 where the backward quantizes
 * without rotation; any token count works (the layer pads tokens with zero rows).
 * q2_linear_get_info reports the multiples.
 */
#ifndef QUARTET2_QUARTET2_H
#define QUARTET2_QUARTET2_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of this header. */
#define Q2_API_VERSION 1

typedef enum q2_status {
  Q2_OK = 0,
  Q2_ERROR_NULL_POINTER = 1,     /* a required pointer argument is null */
  Q2_ERROR_INVALID_ARGUMENT = 2, /* a bad shape, dtype, enum value or alignment */
  Q2_ERROR_UNKNOWN_SCHEME = 3,   /* the message lists the known schemes */
  Q2_ERROR_WRONG_DEVICE = 4,     /* a tensor on another device than the call's, or host memory for CUDA */
  Q2_ERROR_UNSUPPORTED = 5,      /* CUDA absent from this build or machine, a scheme the CUDA layer lacks, ... */
  Q2_ERROR_FAILED = 6,           /* the operation failed: NaN or Inf input, a CUDA error, ... */
  Q2_ERROR_OUT_OF_MEMORY = 7,
  Q2_STATUS_MAX_ENUM = 0x7fffffff
} q2_status;

/* Each enum has a *_MAX_ENUM member (as Vulkan's): it keeps the type int-sized, and any
 * non-negative value a caller passes is one C++ may read, so a bad value is reported, not UB. */
typedef enum q2_device { Q2_DEVICE_CPU = 0, Q2_DEVICE_CUDA = 1, Q2_DEVICE_MAX_ENUM = 0x7fffffff } q2_device;
typedef enum q2_dtype { Q2_FLOAT32 = 0, Q2_BFLOAT16 = 1, Q2_DTYPE_MAX_ENUM = 0x7fffffff } q2_dtype;

/* A contiguous row-major [rows, cols] tensor in the caller's memory (not owned). */
typedef struct q2_tensor {
  void* data;
  int64_t rows, cols;
  q2_dtype dtype;
  q2_device device;
} q2_tensor;

/* The message of the last call on this thread that did not return Q2_OK, naming the argument
 * and the problem ("" before any failure). Valid until this thread's next failing call. */
const char* q2_last_error(void);
/* Q2_API_VERSION of the library (compare with the header's). */
int q2_api_version(void);

/* ---- linear layers ------------------------------------------------------------------------ */

typedef struct q2_linear q2_linear;   /* a layer: scheme, shapes, device */
typedef struct q2_context q2_context; /* what one forward saved for its backward */

typedef struct q2_linear_info {
  int64_t in_features, out_features;
  q2_device device;
  int64_t in_multiple;    /* in_features is a multiple of this */
  int64_t out_multiple;   /* out_features is a multiple of this */
  int64_t token_multiple; /* tokens are padded with zero rows to a multiple of this */
  /* 1: the context reads the caller's x again in backward (the CUDA layer keeps an unpadded
   * BF16 x by reference, as autograd does): x must stay alive and unchanged until then. */
  int borrows_input;
} q2_linear_info;

/* A layer of `scheme` ("quartet2", "bf16", "nvidia", ...; the names of `quartet2 grad-error
 * --scheme`) on `device`. Errors: unknown scheme, shapes the scheme cannot take, CUDA
 * absent, a scheme the CUDA layer cannot run (fp32). */
q2_status q2_linear_create(const char* scheme, int64_t in_features, int64_t out_features, q2_device device,
                           q2_linear** layer);
/* Null is allowed. Contexts of the layer stay usable. */
void q2_linear_destroy(q2_linear* layer);
q2_status q2_linear_get_info(const q2_linear* layer, q2_linear_info* info);

/* y = x w^T. With a non-null `ctx`, *ctx receives a new context holding what backward needs
 * (for quartet2 the packed NVFP4 x_q and w_q); with null, nothing is kept. `stream`: a
 * cudaStream_t for CUDA (null: the legacy default stream), ignored on the CPU. On the CPU, NaN
 * or Inf in an x or w that the scheme quantizes is Q2_ERROR_FAILED; the CUDA layer does not
 * check its inputs. */
q2_status q2_linear_forward(q2_linear* layer, const q2_tensor* x, const q2_tensor* w, const q2_tensor* y,
                            q2_context** ctx, void* stream);
/* dx = dy w (dx may be null: not wanted) and dw += dy^T x, the gradient accumulated into dw
 * (float32). `seed` draws the backward's randomized rotation and stochastic rounding: the same
 * seed gives the same bits (and the CPU and CUDA layers the same quantized operands). A
 * context may be run backward more than once. */
q2_status q2_linear_backward(q2_context* ctx, const q2_tensor* dy, uint64_t seed, const q2_tensor* dx,
                             const q2_tensor* dw, void* stream);
/* The bytes the context keeps for backward that grow with the tokens (x_q, or the dense x), as
 * the native program's memory plan counts them; the weight's share is not included. */
q2_status q2_context_saved_bytes(const q2_context* ctx, size_t* bytes);
/* Null is allowed. Its buffers go back to the layer for the next forward. */
void q2_context_destroy(q2_context* ctx);

/* ---- NVFP4 tensors ------------------------------------------------------------------------- */

/* E4M3 block scales: row-major [rows, cols / 16], or cuBLASLt's VEC16_UE4M3 layout (tiles of
 * 128 rows x 4 scale columns, padding zero) that FP4 GEMMs read. CUDA supports the blocked
 * layout only. */
typedef enum q2_scale_layout {
  Q2_SCALES_ROW_MAJOR = 0,
  Q2_SCALES_BLOCKED = 1,
  Q2_SCALE_LAYOUT_MAX_ENUM = 0x7fffffff
} q2_scale_layout;

/* An NVFP4 [rows, cols] tensor, quantized in 1x16 blocks along rows (cols % 16 == 0):
 * value = e2m1(code) * e4m3(scale) * tensor_scale. Caller's memory on `device`. */
typedef struct q2_nvfp4 {
  void* packed;       /* rows * cols / 2 bytes, row-major, element 2i in the low nibble */
  void* scales;       /* q2_nvfp4_scale_bytes(rows, cols, layout) bytes */
  void* tensor_scale; /* one float32 */
  int64_t rows, cols;
  q2_scale_layout layout;
  q2_device device;
} q2_nvfp4;

typedef enum q2_quantizer {
  Q2_QUANT_RTN = 0,          /* round to nearest, block maximum to 6 */
  Q2_QUANT_FOUR_OVER_SIX = 1, /* quartet2's forward quantizer: each block maps to 6 or 4, the better */
  Q2_QUANTIZER_MAX_ENUM = 0x7fffffff
} q2_quantizer;

q2_status q2_nvfp4_scale_bytes(int64_t rows, int64_t cols, q2_scale_layout layout, size_t* bytes);
/* out = quantizer(x). CPU: x float32. CUDA: x BF16; synchronizes `stream` (to report NaN or
 * Inf input). NaN or Inf input is Q2_ERROR_FAILED. */
q2_status q2_nvfp4_quantize(q2_quantizer quantizer, const q2_tensor* x, const q2_nvfp4* out, void* stream);
/* out = the values of `in` (CPU: float32, exact; CUDA: BF16, rounded to nearest even). */
q2_status q2_nvfp4_dequantize(const q2_nvfp4* in, const q2_tensor* out, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* QUARTET2_QUARTET2_H */
