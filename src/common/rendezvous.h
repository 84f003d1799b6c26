#pragma once
// The file rendezvous of data-parallel start-up (docs/ARCHITECTURE.md): rank 0 publishes a small
// blob (the NCCL unique id) in a shared directory; the other ranks wait for it. Kept free of
// CUDA so the exchange and its timeout are testable on any machine.
#include <string>

namespace q2 {

// DIR/nccl-id: the one file of the exchange.
std::string rendezvous_file(const std::string& dir);

// Creates dir if needed and writes the blob there atomically (readers never see a partial id).
void publish_rendezvous(const std::string& dir, const std::string& bytes);

// Polls until the file holds exactly `size` bytes and returns them; past `timeout_s` throws
// q2::Error naming the file.
std::string await_rendezvous(const std::string& dir, size_t size, double timeout_s);

}  // namespace q2
