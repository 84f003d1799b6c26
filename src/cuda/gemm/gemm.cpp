#include "cuda/gemm/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/error.h"
#include "cuda/quant/quant.h"

namespace q2::cuda::blas {

namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": cublasStatus_t " + std::to_string(static_cast<int>(s)));
}

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// Row-major D = op(A) op(B) is column-major D^T = op(B)^T op(A)^T: cuBLASLt's first operand is
// B, its second A, with the same transposition flags and m/n swapped.
struct Key {
  int64_t m, n, k;
  bool ta, tb, f32_out, accumulate, device_alpha;
  auto tie() const { return std::tie(m, n, k, ta, tb, f32_out, accumulate, device_alpha); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // cuBLASLt's (column-major) A, B, C = D
  cublasLtMatmulAlgo_t algo{};
};

class Lt {
 public:
  static Lt& get() {
    static Lt* lt = new Lt;  // never destroyed: freeing after the CUDA context is torn down fails
    return *lt;
  }

  void run(const Matmul& p) {
    if (p.m <= 0 || p.n <= 0 || p.k <= 0)
      throw Error("GEMM of empty shape M=" + std::to_string(p.m) + ", N=" + std::to_string(p.n) +
                  ", K=" + std::to_string(p.k));
    std::lock_guard<std::mutex> lock(mu_);
    const Key key{p.m, p.n, p.k, p.trans_a, p.trans_b, p.d_type == OutType::kF32, p.accumulate, p.alpha.device != nullptr};
    const Plan& plan = plan_for(key);
    const float beta_host = p.accumulate ? 1.0f : 0.0f;
    const void* alpha = p.alpha.device ? static_cast<const void*>(p.alpha.device) : &p.alpha.host;
    const void* beta = p.alpha.device ? static_cast<const void*>(consts_.get() + (p.accumulate ? 1 : 0)) : &beta_host;
    check_lt(cublasLtMatmul(handle_, plan.desc, alpha, p.b, plan.a, p.a, plan.b, beta, p.d, plan.d, p.d, plan.d,
                            &plan.algo, workspace_.get(), kWorkspaceBytes, 0),
             "cublasLtMatmul");
  }

 private:
  Lt() : workspace_(kWorkspaceBytes), consts_(2) {
    check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
    const float c[2] = {0.0f, 1.0f};
    check(cudaMemcpy(consts_.get(), c, sizeof c, cudaMemcpyHostToDevice), "GEMM constants");
  }

  const Plan& plan_for(const Key& k) {
    auto it = plans_.find(k);
    if (it != plans_.end()) return it->second;
    Plan p;
    check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t opa = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasLtPointerMode_t mode = k.device_alpha ? CUBLASLT_POINTER_MODE_DEVICE : CUBLASLT_POINTER_MODE_HOST;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb), "TRANSB");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof mode),
             "POINTER_MODE");
    // Column-major shapes: cuBLASLt's A is op^-1 of [n, k], its B of [k, m], D is [n, m].
    const uint64_t n = static_cast<uint64_t>(k.n), m = static_cast<uint64_t>(k.m), kk = static_cast<uint64_t>(k.k);
    check_lt(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k.tb ? kk : n, k.tb ? n : kk, k.tb ? kk : n), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k.ta ? m : kk, k.ta ? kk : m, k.ta ? m : kk), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&p.d, k.f32_out ? CUDA_R_32F : CUDA_R_16BF, n, m, n), "layout D");

    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const size_t ws = kWorkspaceBytes;
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
             "MAX_WORKSPACE_BYTES");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(s, "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0)
      throw Error("cuBLASLt has no algorithm for the BF16 GEMM M=" + std::to_string(k.m) + ", N=" +
                  std::to_string(k.n) + ", K=" + std::to_string(k.k));
    p.algo = result.algo;
    return plans_.emplace(k, p).first->second;
  }

  std::mutex mu_;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  DeviceBuffer<float> consts_;  // beta = 0 and 1 for device pointer mode
  std::map<Key, Plan> plans_;
};

}  // namespace

void matmul(const Matmul& p) { Lt::get().run(p); }

}  // namespace q2::cuda::blas
