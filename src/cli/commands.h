#pragma once
#include <CLI/CLI.hpp>

namespace q2::cli {

// Each subcommand registers its options and the action run when it is chosen.
void add_quant_error(CLI::App& app);
void add_grad_error(CLI::App& app);

}  // namespace q2::cli
