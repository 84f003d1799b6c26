#include <map>

#include "common/error.h"
#include "model/backend.h"

namespace q2::model {

namespace {
std::unique_ptr<Backend> make_cpu(const BackendOptions& o) {
  if (o.dist.world > 1 && !o.in_process)
    throw Error("device 'cpu' runs several ranks only as threads of one process (world size " +
                std::to_string(o.dist.world) + " needs --device cuda)");
  if (o.gemm == "native") throw Error("device 'cpu' has no native NVFP4 GEMMs (use method.gemm = \"auto\" or \"emulated\")");
  return make_cpu_backend(o.in_process);
}

std::map<std::string, BackendFactory>& registry() {
  static std::map<std::string, BackendFactory> r{{"cpu", &make_cpu}};
  return r;
}
}  // namespace

bool is_gemm_path(const std::string& path) { return path == "auto" || path == "emulated" || path == "native"; }

void register_backend(const std::string& device, BackendFactory factory) { registry()[device] = factory; }

std::unique_ptr<Backend> make_backend(const std::string& device) {
  const BackendOptions defaults;
  return make_backend(device, defaults);
}

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
