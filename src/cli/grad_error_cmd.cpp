#include <chrono>
#include <cstdio>
#include <memory>
#include <utility>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/error.h"
#include "common/memory.h"
#include "eval/grad_error.h"
#include "eval/chunk_stats.h"
#include "linear/scheme.h"
#include "model/backend.h"
#include "quant/hadamard.h"
#include "quant/seeds.h"

namespace q2::cli {

namespace {

struct GradErrorOptions {
  std::string scheme = "quartet2";
  int64_t m = 1024, k = 1024, n = 1024;
  int draws = 64, hadamard = 0;
  double eden_fallback = 0;  // > 0: MS-EDEN's stochastic rounding of dominated chunks
  int hadamard_rounds = 1;   // 2: the backward's operands rotated twice
  double outlier_split = 0;  // > 0: wgrad's outlier split (method.outlier_split)
  uint64_t seed = 0;
  std::string device = "cpu";  // the backend whose linear layer draws (model::make_backend)
  std::string load;
  int64_t rows = 0;  // --load: use the first rows tokens only (0: all)
  bool json = false;
  bool curve = false;        // also the means of the first 1, 2, 4, ... draws and bias2
  bool chunk_stats = false;  // instead of the errors: statistics of the backward's chunks
};

nlohmann::json to_json(const eval::Quantiles& q) {
  return {{"min", q.min}, {"p1", q.p1}, {"p10", q.p10}, {"p50", q.p50},
          {"p90", q.p90}, {"p99", q.p99}, {"max", q.max}};
}

// The chunks the backward rotates and quantizes, of the operands as loaded (the forward's
// quantization of X and W aside), under the rotation of grad-error's first backward draw.
void print_chunk_stats(const GradErrorOptions& o, const eval::LayerOperands& ops) {
  const int size = o.hadamard ? o.hadamard : 128;
  if (!quant::valid_rht_size(size))
    throw Error("--hadamard must be " + std::string(quant::kRhtSizes) + ", got " + std::to_string(size));
  const quant::Rht r(size, seeds::linear_stream(seeds::experiment_backward(o.seed, 0), seeds::LinearStream::kRotation));
  const Matrix dyt = transpose(ops.dy), wt = transpose(ops.w), xt = transpose(ops.x);
  const std::pair<const char*, MatrixRef> operands[] = {{"dgrad.dy", MatrixRef(ops.dy, "dy")},
                                                        {"dgrad.wt", MatrixRef(wt, "w^T")},
                                                        {"wgrad.dyt", MatrixRef(dyt, "dy^T")},
                                                        {"wgrad.xt", MatrixRef(xt, "x^T")}};
  nlohmann::json j;
  j["config"] = {{"m", ops.x.rows}, {"k", ops.x.cols}, {"n", ops.w.rows}, {"seed", o.seed},
                 {"load", o.load},  {"hadamard", size}, {"dominated_above", eval::kDominated}};
  if (!o.json)
    std::printf("chunk statistics: M=%lld K=%lld N=%lld, %d-element chunks (dominated: outlier share > %g)\n"
                "%-10s %8s %8s %10s %10s %10s %12s %12s %12s\n",
                static_cast<long long>(ops.x.rows), static_cast<long long>(ops.x.cols),
                static_cast<long long>(ops.w.rows), size, eval::kDominated, "operand", "chunks", "zero",
                "share_p99", "share_max", "dominated", "dom_energy", "kurt_rot_p1", "eden_dev_p99");
  for (const auto& [name, m] : operands) {
    const eval::ChunkSummary c = eval::summarize(eval::chunk_stats(m, r));
    j["chunk_stats"][name] = {{"chunks", c.chunks},
                              {"zero_chunks", c.zero_chunks},
                              {"dominated", c.dominated},
                              {"dominated_energy", c.dominated_energy},
                              {"outlier_share", to_json(c.outlier_share)},
                              {"kurtosis", to_json(c.kurtosis)},
                              {"outlier_share_rot", to_json(c.outlier_share_rot)},
                              {"kurtosis_rot", to_json(c.kurtosis_rot)},
                              {"eden_spread", to_json(c.eden_spread)},
                              {"eden_deviation", to_json(c.eden_deviation)}};
    if (!o.json)
      std::printf("%-10s %8lld %8lld %10.4f %10.4f %10.5f %12.5f %12.4f %12.5f\n", name,
                  static_cast<long long>(c.chunks), static_cast<long long>(c.zero_chunks), c.outlier_share.p99,
                  c.outlier_share.max, c.dominated, c.dominated_energy, c.kurtosis_rot.p1, c.eden_deviation.p99);
  }
  if (o.json) std::printf("%s\n", j.dump(2).c_str());
}

void run(const GradErrorOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  // Generated operands are checked before they exist; loaded ones once their shapes are known
  // (counted twice then: a slight overestimate).
  auto require_memory = [](int64_t m, int64_t k, int64_t n, const std::string& what) {
    require_host_memory(eval::grad_error_bytes(m, k, n, what), what);
  };
  if (o.load.empty()) {
    const std::string sizes =
        "grad-error --m " + std::to_string(o.m) + " --k " + std::to_string(o.k) + " --n " + std::to_string(o.n);
    require_memory(o.m, o.k, o.n, sizes);
  }
  eval::LayerOperands ops = o.load.empty() ? eval::default_operands(o.m, o.k, o.n, o.seed) : eval::load_operands(o.load);
  if (o.rows > 0) {
    if (o.rows > ops.x.rows)
      throw Error("--rows " + std::to_string(o.rows) + " exceeds the " + std::to_string(ops.x.rows) + " tokens loaded");
    ops.x = first_rows(std::move(ops.x), o.rows);
    ops.dy = first_rows(std::move(ops.dy), o.rows);
  }
  if (o.chunk_stats) return print_chunk_stats(o, ops);
  if (!o.load.empty())
    require_memory(ops.x.rows, ops.x.cols, ops.w.rows,
                   "grad-error --load " + o.load + " (M " + std::to_string(ops.x.rows) + ", K " +
                       std::to_string(ops.x.cols) + ", N " + std::to_string(ops.w.rows) + ")");
  // The GPU layer reads BF16 operands: rounded first, the CPU reference's targets are what it
  // estimates.
  if (o.device != "cpu") ops = eval::round_to_bf16(std::move(ops));
  const auto backend = model::make_backend(o.device);
  linear::Scheme scheme = linear::scheme_by_name(o.scheme, o.hadamard, o.eden_fallback, o.hadamard_rounds);
  scheme.outlier_split = o.outlier_split;
  const auto rows = eval::grad_error(ops, scheme, o.draws, o.seed, *backend, [&](int done) {
    if (done % 16 == 0 || done == o.draws)
      std::fprintf(stderr, "[grad-error %6.1fs] %s: %d/%d backward draws\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), o.scheme.c_str(), done,
                   o.draws);
  });
  if (o.json) {
    nlohmann::json j;
    j["config"] = {{"scheme", o.scheme}, {"m", ops.x.rows},   {"k", ops.x.cols},       {"n", ops.w.rows},
                   {"draws", o.draws},   {"seed", o.seed},    {"load", o.load},        {"hadamard", o.hadamard},
                   {"eden_fallback", o.eden_fallback}, {"hadamard_rounds", o.hadamard_rounds},
                   {"outlier_split", o.outlier_split}, {"device", o.device}};
    for (const auto& r : rows) {
      j[r.product] = {{"rel_err", r.rel_err}, {"cosine", r.cosine}, {"rel_err_mean", r.rel_err_mean}};
      if (!o.curve || r.curve.empty()) continue;
      j[r.product]["bias2"] = r.bias2;  // NaN (one draw) prints as null
      j[r.product]["bias_along"] = r.bias_along;
      for (const auto& c : r.curve) j[r.product]["curve"].push_back({{"draws", c.draws}, {"rel_err_mean", c.rel_err_mean}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("grad-error: scheme %s, M=%lld K=%lld N=%lld, %d draws, eden_fallback %g, hadamard_rounds %d, "
              "outlier_split %g\n",
              o.scheme.c_str(), static_cast<long long>(ops.x.rows), static_cast<long long>(ops.x.cols),
              static_cast<long long>(ops.w.rows), o.draws, o.eden_fallback, o.hadamard_rounds, o.outlier_split);
  std::printf("%-8s %12s %10s %14s %18s\n", "product", "rel_err", "cosine", "rel_err_mean", "mean*draws/single");
  for (const auto& r : rows)
    std::printf("%-8s %12.6f %10.6f %14.8f %18.4f\n", r.product.c_str(), r.rel_err, r.cosine, r.rel_err_mean,
                r.product == "fwd" ? 1.0 : r.rel_err_mean * o.draws / r.rel_err);
  if (!o.curve) return;
  // ratio: mean * draws / first draw, both against the backward's target; 1 while unbiased.
  std::printf("\n%-8s %6s %14s %10s\n", "product", "draws", "rel_err_mean", "ratio");
  for (const auto& r : rows) {
    for (const auto& c : r.curve)
      std::printf("%-8s %6d %14.8f %10.4f\n", r.product.c_str(), c.draws, c.rel_err_mean,
                  c.rel_err_mean * c.draws / r.curve.front().rel_err_mean);
    if (!r.curve.empty()) std::printf("%-8s bias2 %.3g, bias_along %.3g\n", r.product.c_str(), r.bias2, r.bias_along);
  }
}

}  // namespace

void add_grad_error(CLI::App& app) {
  auto o = std::make_shared<GradErrorOptions>();
  CLI::App* sub = app.add_subcommand("grad-error", "Forward and gradient error of a linear-layer scheme");
  sub->add_option("--scheme", o->scheme, "Scheme (bf16, quartet2, nvidia, sr, tetrajet2, ..._fwd, ..._bwd)")
      ->capture_default_str();
  sub->add_option("--m", o->m, "Tokens")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--k", o->k, "Input features")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--n", o->n, "Output features")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--draws", o->draws, "Backward draws averaged for rel_err_mean")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--hadamard", o->hadamard, "Override the scheme's rotation size (16, 32, 64, 128)");
  sub->add_option("--eden-fallback", o->eden_fallback,
                  "MS-EDEN rounds chunks whose outlier share exceeds this stochastically (0: off; method.eden_fallback)")
      ->capture_default_str();
  sub->add_option("--hadamard-rounds", o->hadamard_rounds,
                  "2: rotate the backward's operands twice, with independent signs (method.hadamard_rounds)")
      ->capture_default_str();
  sub->add_option("--outlier-split", o->outlier_split,
                  "wgrad's operands give up each element holding more than this share of its chunk's energy, "
                  "added exactly (0: off; method.outlier_split)")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the operands and the draws")->capture_default_str();
  sub->add_option("--device", o->device,
                  "Backend of the layer that draws (cpu, cuda); on cuda X, W and dY are rounded to BF16 first, and "
                  "Y and dX come back in BF16")
      ->capture_default_str();
  sub->add_option("--load", o->load, "Directory with x.npy [M,K], w.npy [N,K], dy.npy [M,N]");
  sub->add_option("--rows", o->rows, "With --load: only the first ROWS tokens of x and dy")->check(CLI::NonNegativeNumber);
  sub->add_flag("--json", o->json, "Print one JSON object instead of a table");
  sub->add_flag("--curve", o->curve,
                "Also the error of the mean of the first 1, 2, 4, ... draws (1/draws if unbiased), bias2, an "
                "unbiased estimate of the squared bias, and bias_along, of its component along the target (< 0: "
                "shrinks)");
  sub->add_flag("--chunk-stats", o->chunk_stats,
                "Instead of the errors: outlier share, kurtosis and EDEN factors of the backward operands' "
                "Hadamard chunks");
  sub->callback([o] { run(*o); });
}

}  // namespace q2::cli
