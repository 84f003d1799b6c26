/* The C API used from C (compiled as C99 with -pedantic -Werror): the header is plain C, a
 * layer runs forward and backward on the CPU, and failures come back as a status and a
 * message. The bit-exact comparison with the C++ library is capi_test.cpp. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quartet2/quartet2.h"

enum { kTokens = 40, kIn = 64, kOut = 128 };

static int failures = 0;

static void expect(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "FAILED: %s (last error: %s)\n", what, q2_last_error());
    ++failures;
  }
}

static q2_tensor host(float* data, int64_t rows, int64_t cols) {
  q2_tensor t;
  t.data = data;
  t.rows = rows;
  t.cols = cols;
  t.dtype = Q2_FLOAT32;
  t.device = Q2_DEVICE_CPU;
  return t;
}

static float x[kTokens * kIn], w[kOut * kIn], y[kTokens * kOut], y2[kTokens * kOut];
static float dy[kTokens * kOut], dx[kTokens * kIn], dw[kOut * kIn];

int main(void) {
  q2_linear* layer = NULL;
  q2_linear* refused = NULL;
  q2_context* ctx = NULL;
  q2_linear_info info;
  q2_tensor xt, wt, yt, y2t, dyt, dxt, dwt;
  size_t saved = 0;
  int i, finite = 1, nonzero = 0;

  for (i = 0; i < kTokens * kIn; ++i) x[i] = (float)sin(0.37 * i);
  for (i = 0; i < kOut * kIn; ++i) w[i] = (float)cos(0.11 * i) * 0.1f;
  for (i = 0; i < kTokens * kOut; ++i) dy[i] = (float)sin(0.05 * i + 1.0);
  xt = host(x, kTokens, kIn);
  wt = host(w, kOut, kIn);
  yt = host(y, kTokens, kOut);
  y2t = host(y2, kTokens, kOut);
  dyt = host(dy, kTokens, kOut);
  dxt = host(dx, kTokens, kIn);
  dwt = host(dw, kOut, kIn);

  expect(q2_api_version() == Q2_API_VERSION, "the library's API version is the header's");
  expect(q2_linear_create("quartet2", kIn, kOut, Q2_DEVICE_CPU, &layer) == Q2_OK, "create a quartet2 layer");
  expect(q2_linear_get_info(layer, &info) == Q2_OK && info.out_multiple == 128 && info.token_multiple == 128,
         "info: quartet2 rotates 128 along out_features and tokens");
  expect(q2_linear_forward(layer, &xt, &wt, &yt, &ctx, NULL) == Q2_OK && ctx != NULL, "forward keeping a context");
  expect(q2_linear_forward(layer, &xt, &wt, &y2t, NULL, NULL) == Q2_OK, "forward keeping nothing");
  expect(memcmp(y, y2, sizeof y) == 0, "both forwards give the same bits");
  expect(q2_context_saved_bytes(ctx, &saved) == Q2_OK && saved == 128 * kIn / 2 + 128 * kIn / 16 + sizeof(float),
         "the context keeps x_q: 4.5 bits per element of the padded tokens and a tensor scale");
  expect(q2_linear_backward(ctx, &dyt, 42, &dxt, &dwt, NULL) == Q2_OK, "backward");
  for (i = 0; i < kOut * kIn; ++i) {
    finite = finite && isfinite(dw[i]);
    nonzero = nonzero || dw[i] != 0.0f;
  }
  expect(finite && nonzero, "dw is finite and not all zero");

  refused = (q2_linear*)&info; /* any non-null value: a failed create clears it */
  expect(q2_linear_create("fp3", kIn, kOut, Q2_DEVICE_CPU, &refused) == Q2_ERROR_UNKNOWN_SCHEME && refused == NULL,
         "an unknown scheme is refused and the handle cleared");
  expect(strstr(q2_last_error(), "fp3") != NULL, "the message names the scheme");
  expect(q2_linear_backward(ctx, NULL, 0, NULL, &dwt, NULL) == Q2_ERROR_NULL_POINTER, "a null dy is refused");
  expect(strstr(q2_last_error(), "dy is null") != NULL, "the message names dy");

  q2_context_destroy(ctx);
  q2_linear_destroy(layer);
  q2_linear_destroy(NULL);
  q2_context_destroy(NULL);
  if (failures == 0) printf("capi_c_test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
