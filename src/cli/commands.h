#pragma once
#include <CLI/CLI.hpp>

namespace q2::cli {

// Each subcommand registers its options and the action run when it is chosen.
void add_quant_error(CLI::App& app);
void add_grad_error(CLI::App& app);
void add_train(CLI::App& app);
void add_eval(CLI::App& app);
void add_generate(CLI::App& app);
void add_export(CLI::App& app);
void add_prepare(CLI::App& app);
void add_bench(CLI::App& app);

}  // namespace q2::cli
