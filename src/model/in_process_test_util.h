#pragma once
// Test helper: body(rank) on one thread per rank of an in-process group; returns each rank's
// error message ("" when it returned). A rank that fails aborts the group, so that the others
// stop at their next collective instead of waiting out the timeout.
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "model/in_process.h"

namespace q2::test {

inline std::vector<std::string> on_ranks(model::InProcessGroup& group, const std::function<void(int rank)>& body) {
  std::vector<std::string> errors(static_cast<size_t>(group.world()));
  std::vector<std::thread> threads;
  for (int r = 0; r < group.world(); ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
        group.abort();
      }
    });
  for (std::thread& t : threads) t.join();
  return errors;
}

}  // namespace q2::test
