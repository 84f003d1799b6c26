#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/memory.h"
#include "eval/quant_error.h"
#include "quant/distributions.h"

namespace q2::cli {

namespace {

struct QuantErrorOptions {
  int64_t rows = 4096, cols = 4096;
  std::string dist = "gaussian";
  uint64_t seed = 0;
  int draws = 64;
  bool json = false;
};

void run(const QuantErrorOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string sizes = "quant-error --rows " + std::to_string(o.rows) + " --cols " + std::to_string(o.cols);
  require_host_memory(eval::quant_error_bytes(o.rows, o.cols, sizes), sizes);
  const Matrix x = quant::random_matrix(o.rows, o.cols, quant::parse_dist(o.dist), o.seed);
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const auto rows = eval::quant_error(x, o.draws, o.seed, [&](const eval::QuantErrorRow& r) {
    std::fprintf(stderr, "[quant-error %6.1fs] %s done\n", elapsed(), r.quantizer.c_str());
  });
  if (o.json) {
    nlohmann::json j;
    j["config"] = {{"rows", o.rows}, {"cols", o.cols}, {"dist", o.dist}, {"seed", o.seed}, {"draws", o.draws}};
    for (const auto& r : rows) j[r.quantizer] = {{"rel_mse", r.rel_mse}, {"rel_mse_mean", r.rel_mse_mean}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("quant-error: %lld x %lld %s, seed %llu, %d draws\n", static_cast<long long>(o.rows),
              static_cast<long long>(o.cols), o.dist.c_str(), static_cast<unsigned long long>(o.seed), o.draws);
  std::printf("%-14s %12s %14s %18s\n", "quantizer", "rel_mse", "rel_mse_mean", "mean*draws/single");
  for (const auto& r : rows)
    std::printf("%-14s %12.6f %14.8f %18s\n", r.quantizer.c_str(), r.rel_mse, r.rel_mse_mean,
                r.stochastic ? std::to_string(r.rel_mse_mean * o.draws / r.rel_mse).substr(0, 6).c_str()
                             : "(deterministic)");
  std::printf("(unbiased quantizers show mean*draws/single near 1; biased ones grow with draws)\n");
}

}  // namespace

void add_quant_error(CLI::App& app) {
  auto o = std::make_shared<QuantErrorOptions>();
  CLI::App* sub = app.add_subcommand("quant-error", "Error and bias of each NVFP4 quantizer on a random tensor");
  sub->add_option("--rows", o->rows, "Rows of the tensor")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--cols", o->cols, "Row length (a multiple of 128)")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--dist", o->dist, "Element distribution")
      ->check(CLI::IsMember({"gaussian", "laplace", "student3"}))
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the data and of every draw")->capture_default_str();
  sub->add_option("--draws", o->draws, "Independent draws averaged for rel_mse_mean")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object instead of a table");
  sub->callback([o] { run(*o); });
}

}  // namespace q2::cli
