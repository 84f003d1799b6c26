#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>

#include "cli/commands.h"
#include "common/error.h"
#ifdef Q2_HAVE_CUDA
#include "cuda/model_backend.h"
#endif

int main(int argc, char** argv) {
#ifdef Q2_HAVE_CUDA
  q2::cuda::register_cuda_backend();
#endif
  CLI::App app{"quartet2: NVFP4 pre-training with the Quartet II recipe"};
  app.require_subcommand(1);
  q2::cli::add_quant_error(app);
  q2::cli::add_grad_error(app);
  q2::cli::add_train(app);
  q2::cli::add_eval(app);
  q2::cli::add_generate(app);
  q2::cli::add_export(app);
  q2::cli::add_prepare(app);
  q2::cli::add_bench(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const q2::Error& e) {
    std::fprintf(stderr, "quartet2: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // Sizes are checked before large allocations; this is the fallback for one that slipped through.
    std::fprintf(stderr, "quartet2: error: out of memory (an allocation failed); try smaller sizes\n");
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "quartet2: error: '%s': %s\n", e.path1().c_str(), e.code().message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quartet2: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
