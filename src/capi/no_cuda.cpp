// The CUDA half of the C API in a library built without CUDA: every CUDA call is refused.
#include "capi/device.h"

namespace q2::capi {

const Device& cuda_device() {
  throw Fail(Q2_ERROR_UNSUPPORTED, "device 'cuda': this libquartet2_c was built without CUDA (configure with nvcc "
                                   "installed and QUARTET2_ENABLE_CUDA=ON)");
}

}  // namespace q2::capi
