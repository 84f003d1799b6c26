// Does cuBLASLt accept A/B scale pointers on a BF16 GEMM (so alpha = t_a t_b needs no kernel)?
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cstdio>
#include <vector>
#include <cstring>
#include <cstdlib>
#define CK(x) do { auto s_ = (x); if (s_ != 0) { printf("ERR %s -> %d (line %d)\n", #x, (int)s_, __LINE__); } } while (0)
int main() {
  cublasLtHandle_t lt; CK(cublasLtCreate(&lt));
  const int M = 8192, N = 2048, K = 2048;  // row-major D[M,N] = A[M,K] B[N,K]^T -> col-major D^T = B A^T: lt A = B (k x n, T), lt B = A
  std::vector<__nv_bfloat16> ha((size_t)M * K), hb((size_t)N * K);
  srand(1);
  for (auto& v : ha) v = __float2bfloat16((rand() % 17 - 8) * 0.25f);
  for (auto& v : hb) v = __float2bfloat16((rand() % 13 - 6) * 0.5f);
  __nv_bfloat16 *a, *b; float *d1, *d2, *sc;
  cudaMalloc(&a, ha.size() * 2); cudaMalloc(&b, hb.size() * 2);
  cudaMalloc(&d1, (size_t)M * N * 4); cudaMalloc(&d2, (size_t)M * N * 4); cudaMalloc(&sc, 64);
  cudaMemcpy(a, ha.data(), ha.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice);
  float hs[4] = {0.3712f, 1.77e-3f, 0.3712f * 1.77e-3f, 0.0f};
  cudaMemcpy(sc, hs, 16, cudaMemcpyHostToDevice);
  void* ws; size_t wsb = 32 << 20; cudaMalloc(&ws, wsb);
  for (int outf32 = 0; outf32 < 2; ++outf32) {
    cudaDataType_t dt = outf32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatrixLayout_t la, lb, ld;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, N, K));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, M, K));
    CK(cublasLtMatrixLayoutCreate(&ld, dt, N, M, N));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    auto mk = [&](bool scales, cublasLtMatmulDesc_t& desc) {
      CK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
      CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
      cublasLtPointerMode_t pm = scales ? CUBLASLT_POINTER_MODE_HOST : CUBLASLT_POINTER_MODE_DEVICE;
      CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
      if (scales) {
        const float* pa = sc; const float* pb = sc + 1;
        printf("set A_SCALE: "); CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof pa)); printf("\n");
        printf("set B_SCALE: "); CK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof pb)); printf("\n");
      }
    };
    cublasLtMatmulDesc_t d_dev, d_sc; mk(false, d_dev); mk(true, d_sc);
    cublasLtMatmulPreference_t pref; CK(cublasLtMatmulPreferenceCreate(&pref));
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t h1{}, h2{}; int n1 = 0, n2 = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, d_dev, la, lb, ld, ld, pref, 1, &h1, &n1));
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, d_sc, la, lb, ld, ld, pref, 1, &h2, &n2);
    printf("out %s: heuristic device-alpha n=%d; scale-pointer status %d n=%d\n", outf32 ? "f32" : "bf16", n1, (int)st, n2);
    float* dd1 = d1; float* dd2 = d2;
    const float zero = 0.0f, one = 1.0f;
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    auto run = [&](cublasLtMatmulDesc_t desc, cublasLtMatmulHeuristicResult_t& h, float* d, bool dev) {
      const void* al = dev ? (const void*)(sc + 2) : (const void*)&one;
      const void* be = dev ? (const void*)(sc + 3) : (const void*)&zero;
      return cublasLtMatmul(lt, desc, al, b, la, a, lb, be, d, ld, d, ld, &h.algo, ws, wsb, 0);
    };
    CK(run(d_dev, h1, dd1, true));
    if (n2 > 0) {
      printf("matmul with scale pointers: "); CK(run(d_sc, h2, dd2, false)); printf("\n");
      cudaDeviceSynchronize();
      size_t bytes = (size_t)M * N * (outf32 ? 4 : 2);
      std::vector<char> r1(bytes), r2(bytes);
      cudaMemcpy(r1.data(), dd1, bytes, cudaMemcpyDeviceToHost);
      cudaMemcpy(r2.data(), dd2, bytes, cudaMemcpyDeviceToHost);
      printf("bit-identical: %s\n", memcmp(r1.data(), r2.data(), bytes) == 0 ? "yes" : "NO");
      for (int rep = 0; rep < 2; ++rep) {
        for (int which = 0; which < 2; ++which) {
          cudaEventRecord(e0);
          for (int i = 0; i < 50; ++i) which ? run(d_sc, h2, dd2, false) : run(d_dev, h1, dd1, true);
          cudaEventRecord(e1); cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1);
          printf("  %s: %.4f ms\n", which ? "scale ptrs" : "device alpha", ms / 50);
        }
      }
    }
    printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
  }
}
