// Alpha in device memory without a device beta: timings and bits of cuBLASLt pointer modes for
// the layer's three TN products at two shapes (session 6 experiment).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cstdio>
#include <vector>
#include <cstring>
#include <cstdlib>
#define CK(x) do { auto s_ = (x); if (s_ != 0) { printf("ERR %s -> %d (line %d)\n", #x, (int)s_, __LINE__); } } while (0)
cublasLtHandle_t lt; void* ws; size_t wsb = 32 << 20;
struct G { cublasLtMatmulDesc_t desc; cublasLtMatrixLayout_t la, lb, ld; cublasLtMatmulAlgo_t algo; bool ok; };
// row-major D[M,N] (+)= alpha A[M,K] B[N,K]^T
G make(int M, int N, int K, bool f32, int mode, const cublasLtMatmulAlgo_t* force) {
  G g{}; cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  CK(cublasLtMatrixLayoutCreate(&g.la, CUDA_R_16BF, K, N, K));
  CK(cublasLtMatrixLayoutCreate(&g.lb, CUDA_R_16BF, K, M, K));
  CK(cublasLtMatrixLayoutCreate(&g.ld, f32 ? CUDA_R_32F : CUDA_R_16BF, N, M, N));
  CK(cublasLtMatmulDescCreate(&g.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CK(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
  CK(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
  cublasLtPointerMode_t pm = (cublasLtPointerMode_t)mode;
  CK(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
  cublasLtMatmulPreference_t pref; CK(cublasLtMatmulPreferenceCreate(&pref));
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
  cublasLtMatmulHeuristicResult_t h{}; int found = 0;
  if (force) {
    g.ok = cublasLtMatmulAlgoCheck(lt, g.desc, g.la, g.lb, g.ld, g.ld, force, &h) == 0; g.algo = *force;
  } else {
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, g.desc, g.la, g.lb, g.ld, g.ld, pref, 1, &h, &found);
    g.ok = s == 0 && found > 0; g.algo = h.algo;
  }
  return g;
}
int main() {
  CK(cublasLtCreate(&lt)); cudaMalloc(&ws, wsb);
  size_t big = (size_t)16384 * 8192;
  __nv_bfloat16 *a, *b; void *d0, *d1; float* sc;
  cudaMalloc(&a, big * 2); cudaMalloc(&b, big * 2); cudaMalloc(&d0, big * 4); cudaMalloc(&d1, big * 4); cudaMalloc(&sc, 65536 * 4);
  std::vector<__nv_bfloat16> h(big); srand(1);
  for (auto& v : h) v = __float2bfloat16((rand() % 17 - 8) * 0.25f);
  cudaMemcpy(a, h.data(), big * 2, cudaMemcpyHostToDevice);
  for (auto& v : h) v = __float2bfloat16((rand() % 13 - 6) * 0.5f);
  cudaMemcpy(b, h.data(), big * 2, cudaMemcpyHostToDevice);
  const float alpha = 0.3712f * 1.77e-3f;
  std::vector<float> hv(65536, alpha); hv[0] = 0.0f; hv[1] = 1.0f; hv[2] = alpha;
  cudaMemcpy(sc + 16, hv.data(), 60000 * 4, cudaMemcpyHostToDevice);  // alpha vector at sc+16
  cudaMemcpy(sc, hv.data(), 16, cudaMemcpyHostToDevice);               // sc[0]=0, sc[1]=1, sc[2]=alpha
  cudaMemcpy(sc + 16, hv.data() + 3, 4, cudaMemcpyHostToDevice);
  struct S { const char* name; int M, N, K; bool f32acc; } shapes[] = {
      {"s1 fwd", 8192, 2048, 2048, false}, {"s1 wgrad", 2048, 2048, 8192, true},
      {"s3 fwd", 8192, 2048, 8192, false}, {"s3 dgrad", 8192, 8192, 2048, false}, {"s3 wgrad", 2048, 8192, 8192, true}};
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (auto& s : shapes) {
    G host = make(s.M, s.N, s.K, s.f32acc, CUBLASLT_POINTER_MODE_HOST, nullptr);
    G dev = make(s.M, s.N, s.K, s.f32acc, CUBLASLT_POINTER_MODE_DEVICE, &host.algo);
    G devh = make(s.M, s.N, s.K, s.f32acc, CUBLASLT_POINTER_MODE_DEVICE, nullptr);
    int vm = s.f32acc ? CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST : CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO;
    G vec = make(s.M, s.N, s.K, s.f32acc, vm, nullptr);
    G vecf = make(s.M, s.N, s.K, s.f32acc, vm, &host.algo);
    printf("%s: ok host %d dev(host algo) %d dev(own) %d vec %d vec(host algo) %d\n", s.name, host.ok, dev.ok, devh.ok, vec.ok, vecf.ok);
    const float zero = 0.0f, one = 1.0f;
    const float* beta_h = s.f32acc ? &one : &zero;
    auto run = [&](int which, void* d) {
      switch (which) {
        case 0: return cublasLtMatmul(lt, host.desc, &alpha, b, host.la, a, host.lb, beta_h, d, host.ld, d, host.ld, &host.algo, ws, wsb, 0);
        case 1: return cublasLtMatmul(lt, dev.desc, sc + 2, b, dev.la, a, dev.lb, sc + (s.f32acc ? 1 : 0), d, dev.ld, d, dev.ld, &dev.algo, ws, wsb, 0);
        case 2: return cublasLtMatmul(lt, devh.desc, sc + 2, b, devh.la, a, devh.lb, sc + (s.f32acc ? 1 : 0), d, devh.ld, d, devh.ld, &devh.algo, ws, wsb, 0);
        case 3: return cublasLtMatmul(lt, vec.desc, sc + 16, b, vec.la, a, vec.lb, beta_h, d, vec.ld, d, vec.ld, &vec.algo, ws, wsb, 0);
        default: return cublasLtMatmul(lt, vecf.desc, sc + 16, b, vecf.la, a, vecf.lb, beta_h, d, vecf.ld, d, vecf.ld, &vecf.algo, ws, wsb, 0);
      }
    };
    bool oks[5] = {host.ok, dev.ok, devh.ok, vec.ok, vecf.ok};
    size_t bytes = (size_t)s.M * s.N * (s.f32acc ? 4 : 2);
    std::vector<char> r0(bytes), r1(bytes);
    cudaMemset(d0, 0, bytes); CK(run(0, d0)); cudaMemcpy(r0.data(), d0, bytes, cudaMemcpyDeviceToHost);
    for (int w = 1; w < 5; ++w) if (oks[w]) {
      cudaMemset(d1, 0, bytes); CK(run(w, d1)); cudaMemcpy(r1.data(), d1, bytes, cudaMemcpyDeviceToHost);
      printf("  mode %d bit-identical to host: %s\n", w, memcmp(r0.data(), r1.data(), bytes) == 0 ? "yes" : "NO");
    }
    float tot[5] = {0};
    for (int rep = 0; rep < 5; ++rep)
      for (int w = 0; w < 5; ++w) if (oks[w]) {
        cudaEventRecord(e0);
        for (int i = 0; i < 20; ++i) run(w, d1);
        cudaEventRecord(e1); cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1); tot[w] += ms / 100;
      }
    printf("  ms: host %.4f  dev(host algo) %.4f  dev(own) %.4f  vec %.4f  vec(host algo) %.4f\n", tot[0], tot[1], tot[2], tot[3], tot[4]);
  }
  printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
}
