#include <gtest/gtest.h>

#include "common/error_test_util.h"
#include "model/backend.h"
#include "model/collectives.h"
#include "model/in_process.h"

namespace q2::model {
namespace {

using test::error_of;

BackendOptions gemm(const std::string& path) {
  BackendOptions o;
  o.gemm = path;
  return o;
}

TEST(BackendRegistry, MakesTheCpuBackendAndNamesWhatItCannotDo) {
  EXPECT_EQ(make_backend("cpu")->collectives().world(), 1);
  EXPECT_EQ(make_backend("cpu", gemm("emulated"))->collectives().world(), 1);
  EXPECT_NE(error_of([] { make_backend("tpu"); }).find("device 'tpu' is not available in this build (available: cpu"),
            std::string::npos);
  BackendOptions two;
  two.dist.world = 2;
  EXPECT_NE(error_of([&] { make_backend("cpu", two); }).find("world size 2"), std::string::npos);
  // A rank of an in-process job instead.
  InProcessGroup group(2);
  two.in_process = &group.rank(1);
  EXPECT_EQ(&make_backend("cpu", two)->collectives(), &group.rank(1));
  EXPECT_NE(error_of([] { make_backend("cpu", gemm("native")); }).find("no native NVFP4 GEMMs"), std::string::npos);
  EXPECT_NE(error_of([] { make_backend("cpu", gemm("fp8")); }).find("unknown NVFP4 GEMM path 'fp8'"),
            std::string::npos);
}

}  // namespace
}  // namespace q2::model
