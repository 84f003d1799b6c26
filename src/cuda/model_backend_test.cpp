// The CUDA backend against the CPU backend on the same model, weights and tokens: the loss
// and every gradient of one training step, and the loss after one AdamW update. BF16
// activations on the GPU bound the agreement (issue 6: loss within 1e-2 relative, gradient
// cosine >= 0.999 for bf16). Skips without a GPU (not part of ctest).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/error_test_util.h"
#include "cuda/gemm/gemm.h"
#include "cuda/model_backend.h"
#include "cuda/runtime/test_util.h"
#include "model/transformer.h"
#include "quant/philox.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace q2::cuda {
namespace {

std::vector<uint32_t> tokens(int64_t n, uint64_t seed, uint32_t vocab) {
  std::vector<uint32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = philox::word(seed, philox::kData, static_cast<uint64_t>(i)) % vocab;
  return t;
}

double cosine(const Matrix& a, const Matrix& b) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a.data[i]) * b.data[i];
    aa += static_cast<double>(a.data[i]) * a.data[i];
    bb += static_cast<double>(b.data[i]) * b.data[i];
  }
  return aa == 0 && bb == 0 ? 1.0 : ab / std::sqrt(aa * bb);
}

struct StepResult {
  double loss = 0, loss_after = 0;
  std::vector<Matrix> grads;
  std::vector<std::string> names;
};

// One step of a model with head_dim 64 (the tiny preset's), a vocabulary and token count that
// are not powers of two, on the named backend; `gqa_window`: 2 key/value heads for 4 query heads
// and a first layer of sliding-window attention (window 100 of 200 positions).
StepResult one_step(const std::string& device, const std::string& scheme, bool gqa_window = false) {
  register_cuda_backend();
  model::ModelConfig mc = model::preset("tiny", 1000, 200);
  mc.n_layers = 2;
  if (gqa_window) {
    mc.n_kv_heads = 2;
    mc.window_pattern = "SL";
  }
  const int64_t batch = 3, seq = 200, n = batch * seq;
  const auto in = tokens(n, 1, 1000), tg = tokens(n, 2, 1000);
  auto backend = model::make_backend(device);
  model::Transformer model(mc, linear::scheme_by_name(scheme, 0), *backend);
  model.init(5);
  StepResult r;
  model.zero_grads();
  r.loss = model.forward(in, tg, batch, seq) / n;
  model.backward(11, 1.0f / static_cast<float>(n));
  for (size_t i = 0; i < model.grads().size(); ++i) {
    r.grads.push_back(backend->download(model.grads()[i]));
    r.names.push_back(model.params()[i].name);
  }
  train::TrainConfig tc;
  train::AdamW opt(*backend, model.params());
  opt.step(model.params(), model.grads(), 1e-3, tc, 1);
  r.loss_after = model.forward(in, tg, batch, seq) / n;
  return r;
}

void expect_agreement(const std::string& scheme, double min_cosine, bool gqa_window = false) {
  const StepResult cpu = one_step("cpu", scheme, gqa_window), gpu = one_step("cuda", scheme, gqa_window);
  EXPECT_NEAR(gpu.loss, cpu.loss, 1e-2 * cpu.loss) << scheme;
  EXPECT_NEAR(gpu.loss_after, cpu.loss_after, 1e-2 * cpu.loss_after) << scheme;
  EXPECT_LT(gpu.loss_after, gpu.loss) << scheme << ": one AdamW step lowers the loss on its own batch";
  double worst = 1;
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    const double c = cosine(gpu.grads[i], cpu.grads[i]);
    EXPECT_GE(c, min_cosine) << scheme << " " << cpu.names[i];
    worst = std::min(worst, c);
  }
  std::printf("%s: loss cpu %.6f gpu %.6f; after one step cpu %.6f gpu %.6f; worst gradient cosine %.6f\n",
              scheme.c_str(), cpu.loss, gpu.loss, cpu.loss_after, gpu.loss_after, worst);
}

TEST(GpuBackend, Bf16StepAgreesWithCpu) {
  REQUIRE_GPU();
  expect_agreement("bf16", 0.999);
}

TEST(GpuBackend, Bf16StepAgreesWithCpuGroupedQueryAndWindow) {
  REQUIRE_GPU();
  expect_agreement("bf16", 0.999, true);
}

// Quantized operands of one layer are bit-identical for identical inputs (linear_test.cpp);
// in a whole model the GPU's BF16 activations change the inputs slightly, so this checks the
// step agrees like two draws of the same unbiased estimator would, not bit for bit.
TEST(GpuBackend, Quartet2StepAgreesWithCpu) {
  REQUIRE_GPU();
  expect_agreement("quartet2", 0.9);
}

// The GEMM path is chosen at run time: 'auto' always works, 'native' only with FP4 tensor cores.
TEST(GpuBackend, GemmPathIsChosenAtRunTime) {
  REQUIRE_GPU();
  register_cuda_backend();
  auto gemm = [](const char* path) {
    model::BackendOptions o;
    o.gemm = path;
    return o;
  };
  EXPECT_EQ(model::make_backend("cuda", gemm("auto"))->name(), "cuda");
  EXPECT_EQ(model::make_backend("cuda", gemm("emulated"))->name(), "cuda");
  if (blas::has_native_nvfp4())
    EXPECT_EQ(model::make_backend("cuda", gemm("native"))->name(), "cuda");
  else
    test::expect_error([&] { model::make_backend("cuda", gemm("native")); }, "method.gemm = native needs FP4");
}

// Most of the nanochat architecture's options run on the CPU only for now: the backend refuses a
// model that uses any of them before it allocates, naming each. Grouped-query and sliding-window
// attention it implements. Needs no GPU.
TEST(GpuBackend, RefusesTheCpuOnlyModelOptionsByName) {
  EXPECT_NO_THROW(check_model_supported(model::preset("200m", 32000, 512)));
  const std::string e = q2::test::error_of([] { check_model_supported(model::preset("nanochat-d20", 65536, 2048)); });
  for (const char* option : {"model.mlp = \"relu2\"", "model.qk_norm = true", "model.norm_weights = false",
                             "model.embed_norm = true", "model.resid_x0_lambdas = true", "model.logit_softcap = 15",
                             "CPU-only for now"})
    EXPECT_NE(e.find(option), std::string::npos) << option << " in: " << e;
  EXPECT_EQ(e.find("model.window_pattern"), std::string::npos) << e;
  model::ModelConfig llama = model::preset("tiny", 100, 64);
  llama.n_kv_heads = 2;
  llama.window_pattern = "SSL";
  EXPECT_NO_THROW(check_model_supported(llama));
  llama.tie_embeddings = true;
  const std::string g = q2::test::error_of([&] { check_model_supported(llama); });
  EXPECT_NE(g.find("does not implement model.tie_embeddings = true yet"), std::string::npos) << g;
  EXPECT_EQ(g.find("model.n_kv_heads"), std::string::npos) << g;
}

}  // namespace
}  // namespace q2::cuda
