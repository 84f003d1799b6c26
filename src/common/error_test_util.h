#pragma once
// Test helper: the message of the q2::Error that f throws, or "no error".
#include <functional>
#include <string>

#include "common/error.h"

namespace q2::test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace q2::test
