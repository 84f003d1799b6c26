#include "cuda/gemm/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/error.h"
#include "cuda/runtime/device.h"
#include "gemm/workspace.h"

namespace q2::cuda::blas {

namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": cublasStatus_t " + std::to_string(static_cast<int>(s)));
}

constexpr size_t kWorkspaceBytes = q2::gemm::kCublasLtWorkspaceBytes;

// Row-major D = op(A) op(B) is column-major D^T = op(B)^T op(A)^T: cuBLASLt's first operand is
// B, its second A, with the same transposition flags and m/n swapped.
struct Key {
  int64_t m, n, k;
  bool ta, tb, f32_out, accumulate, device_alpha;
  bool fp4 = false;  // E2M1 operands with VEC16 E4M3 scales instead of BF16
  auto tie() const { return std::tie(m, n, k, ta, tb, f32_out, accumulate, device_alpha, fp4); }
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
    const float beta_host = p.accumulate ? 1.0f : 0.0f;
    const void* alpha = p.alpha.device ? static_cast<const void*>(p.alpha.device) : &p.alpha.host;
    const void* beta = p.alpha.device ? static_cast<const void*>(consts_.get() + (p.accumulate ? 1 : 0)) : &beta_host;
    launch(plan_for(key), alpha, beta, p.a, p.b, p.d);
  }

  // As run() with A [M, K] and op(B) = B^T, B [N, K]: cuBLASLt's "TN", the only layout of its
  // FP4 GEMMs.
  void run(const Nvfp4Matmul& p) {
    if (!p.a || !p.b || !p.alpha) throw Error("NVFP4 GEMM: operands and alpha are required");
    if (p.m <= 0 || p.n <= 0 || p.k <= 0) throw Error("NVFP4 GEMM of empty shape");
    if (p.a->cols != p.k || p.b->cols != p.k || p.a->rows < p.m || p.b->rows < p.n)
      throw Error("NVFP4 GEMM M=" + std::to_string(p.m) + ", N=" + std::to_string(p.n) + ", K=" + std::to_string(p.k) +
                  ": A is [" + std::to_string(p.a->rows) + ", " + std::to_string(p.a->cols) + "], B is [" +
                  std::to_string(p.b->rows) + ", " + std::to_string(p.b->cols) + "]");
    if (!native_)
      throw Error("NVFP4 GEMM: this GPU has no FP4 tensor cores (compute capability 10.x or 12.x needed); use the "
                  "emulated GEMM path");
    std::lock_guard<std::mutex> lock(mu_);
    const Key key{p.m, p.n, p.k, false, true, p.d_type == OutType::kF32, p.accumulate, true, true};
    const Plan& plan = plan_for(key);
    // cuBLASLt's A is our B (see Key), so the scales swap too.
    const void* scales_a = p.b->scales.get();
    const void* scales_b = p.a->scales.get();
    check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scales_a, sizeof scales_a),
             "A_SCALE_POINTER");
    check_lt(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scales_b, sizeof scales_b),
             "B_SCALE_POINTER");
    launch(plan, p.alpha, consts_.get() + (p.accumulate ? 1 : 0), p.a->packed.get(), p.b->packed.get(), p.d);
  }

 private:
  // One device per process: whether it has FP4 tensor cores is asked once, not per GEMM.
  Lt() : workspace_(kWorkspaceBytes), consts_(2), native_(has_native_nvfp4()) {
    check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
    const float c[2] = {0.0f, 1.0f};
    check(cudaMemcpy(consts_.get(), c, sizeof c, cudaMemcpyHostToDevice), "GEMM constants");
  }

  // Row-major D = A op(B): cuBLASLt's operands swapped (see Key).
  void launch(const Plan& plan, const void* alpha, const void* beta, const void* a, const void* b, void* d) {
    check_lt(cublasLtMatmul(handle_, plan.desc, alpha, b, plan.a, a, plan.b, beta, d, plan.d, d, plan.d, &plan.algo,
                            workspace_.get(), kWorkspaceBytes, 0),
             "cublasLtMatmul");
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
    if (k.fp4) {
      const cublasLtMatmulMatrixScale_t vec16 = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec16, sizeof vec16),
               "A_SCALE_MODE");
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec16, sizeof vec16),
               "B_SCALE_MODE");
    }
    const cudaDataType_t in = k.fp4 ? CUDA_R_4F_E2M1 : CUDA_R_16BF;
    // Column-major shapes: cuBLASLt's A is op^-1 of [n, k], its B of [k, m], D is [n, m].
    const uint64_t n = static_cast<uint64_t>(k.n), m = static_cast<uint64_t>(k.m), kk = static_cast<uint64_t>(k.k);
    check_lt(cublasLtMatrixLayoutCreate(&p.a, in, k.tb ? kk : n, k.tb ? n : kk, k.tb ? kk : n), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, in, k.ta ? m : kk, k.ta ? kk : m, k.ta ? m : kk), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&p.d, k.f32_out ? CUDA_R_32F : CUDA_R_16BF, n, m, n), "layout D");

    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const size_t ws = kWorkspaceBytes;
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
             "MAX_WORKSPACE_BYTES");
    // A split-K algorithm may add its partial sums in the output type: BF16 partials round
    // at every step. Keep BF16 outputs' reductions in FP32 (or unsplit).
    if (!k.f32_out) {
      const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                    sizeof schemes),
               "REDUCTION_SCHEME_MASK");
    }
    auto heuristic = [&](cublasLtMatmulHeuristicResult_t& r) {
      int found = 0;
      const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &r, &found);
      return s == CUBLAS_STATUS_SUCCESS && found > 0;
    };
    cublasLtMatmulHeuristicResult_t result{};
    // With alpha on the device the heuristic picks slower BF16 kernels than with the same
    // product's host alpha (bench layer's reference rows): take the host-mode choice wherever
    // cuBLASLt accepts it for the device-mode descriptor.
    bool chosen = false;
    if (k.device_alpha && !k.fp4) {
      const cublasLtPointerMode_t host = CUBLASLT_POINTER_MODE_HOST;
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &host, sizeof host),
               "POINTER_MODE");
      cublasLtMatmulHeuristicResult_t host_result{};
      const bool found = heuristic(host_result);
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof mode),
               "POINTER_MODE");
      chosen = found &&
               cublasLtMatmulAlgoCheck(handle_, p.desc, p.a, p.b, p.d, p.d, &host_result.algo, &result) ==
                   CUBLAS_STATUS_SUCCESS &&
               result.workspaceSize <= kWorkspaceBytes;
      result.algo = host_result.algo;
    }
    if (!chosen) chosen = heuristic(result);
    cublasLtMatmulPreferenceDestroy(pref);
    if (!chosen)
      throw Error(std::string("cuBLASLt has no algorithm for the ") + (k.fp4 ? "NVFP4" : "BF16") +
                  " GEMM M=" + std::to_string(k.m) + ", N=" + std::to_string(k.n) + ", K=" + std::to_string(k.k));
    p.algo = result.algo;
    return plans_.emplace(k, p).first->second;
  }

  std::mutex mu_;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  DeviceBuffer<float> consts_;  // beta = 0 and 1 for device pointer mode
  bool native_;                 // FP4 tensor cores (has_native_nvfp4)
  std::map<Key, Plan> plans_;
};

}  // namespace

void matmul(const Matmul& p) { Lt::get().run(p); }

bool has_native_nvfp4() {
  int device = 0, major = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  return major == 10 || major == 12;
}

void nvfp4_matmul(const Nvfp4Matmul& p) { Lt::get().run(p); }

}  // namespace q2::cuda::blas
