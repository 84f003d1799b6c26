#include <map>

#include "common/error.h"
#include "model/backend.h"

namespace q2::model {

namespace {
std::unique_ptr<Backend> make_cpu(const BackendOptions& o) {
  if (o.dist.world > 1)
    throw Error("device 'cpu' runs a single process only (world size " + std::to_string(o.dist.world) +
                " needs --device cuda)");
  if (o.gemm == "native") throw Error("device 'cpu' has no native NVFP4 GEMMs (use method.gemm = \"auto\" or \"emulated\")");
  return make_cpu_backend();
}

std::map<std::string, BackendFactory>& registry() {
  static std::map<std::string, BackendFactory> r{{"cpu", &make_cpu}};
  return r;
}
}  // namespace

void Backend::lacks(const char* op) const {
  throw Error("device '" + name() + "' has no " + op + " (the model's options should have been refused by "
              "check_supported)");
}

void Backend::head_rmsnorm_forward(Tensor&, int64_t, int64_t, int64_t, double, Tensor&) { lacks("QK norm"); }
void Backend::head_rmsnorm_backward(Tensor&, const Tensor&, int64_t, int64_t, int64_t, const Tensor&) {
  lacks("QK norm");
}
void Backend::relu2_forward(const Tensor&, Tensor&) { lacks("ReLU^2"); }
void Backend::relu2_backward(const Tensor&, const Tensor&, Tensor&) { lacks("ReLU^2"); }
void Backend::residual_mix_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&) {
  lacks("resid / x0 lambdas");
}
void Backend::residual_mix_backward(Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&,
                                    Tensor&, Tensor&) {
  lacks("resid / x0 lambdas");
}
void Backend::softcap_forward(Tensor&, float) { lacks("logit softcap"); }
void Backend::softcap_backward(Tensor&, const Tensor&, float) { lacks("logit softcap"); }

bool is_gemm_path(const std::string& path) { return path == "auto" || path == "emulated" || path == "native"; }

void register_backend(const std::string& device, BackendFactory factory) { registry()[device] = factory; }

std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& options) {
  if (!is_gemm_path(options.gemm))
    throw Error("unknown NVFP4 GEMM path '" + options.gemm + "' (known: auto, emulated, native)");
  const auto it = registry().find(device);
  if (it != registry().end()) return it->second(options);
  std::string known;
  for (const auto& [name, f] : registry()) known += (known.empty() ? "" : ", ") + name;
  throw Error("device '" + device + "' is not available in this build (available: " + known +
              (device == "cuda" ? "; build with the CUDA toolkit installed for cuda)" : ")"));
}

}  // namespace q2::model
