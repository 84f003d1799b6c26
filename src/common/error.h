#pragma once
#include <stdexcept>
#include <string>

namespace q2 {

// Every user-facing failure: the message names the tensor, file or option at fault.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace q2
