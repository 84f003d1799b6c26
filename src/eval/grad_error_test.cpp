#include "eval/grad_error.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "common/error.h"
#include "common/npy.h"

namespace q2::eval {
namespace {

TEST(GradError, LoadOperandsRejectsShapesThatDoNotFormALayer) {
  const auto d = std::filesystem::temp_directory_path() / ("q2_grad_error_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  const std::string dir = d.string();
  save_npy(dir + "/x.npy", Matrix(4, 16));
  save_npy(dir + "/w.npy", Matrix(8, 16));
  save_npy(dir + "/dy.npy", Matrix(4, 7));  // wrong: should be [4, 8]
  try {
    load_operands(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not form a linear layer"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

// A property of the quartet2 linear layer (linear/linear.h), measured with the grad-error
// experiment: averaged over draws, its backward estimates the product of the forward-quantized
// operands without bias.
TEST(LinearQuartet2, BackwardIsUnbiasedForTheForwardQuantizedOperands) {
  const auto backend = gemm::make_cpu_backend();
  const LayerOperands ops = default_operands(256, 256, 128, 5);
  const auto rows = grad_error(ops, "quartet2", 0, 64, 1, *backend);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_LT(rows[i].rel_err_mean, 1.3 * rows[i].rel_err / 64) << rows[i].product;
}

}  // namespace
}  // namespace q2::eval
