#pragma once
// Shared by the libFuzzer targets (fuzz/*_fuzz.cpp). Every parser under test takes a file path,
// so each input is written to a file in a directory private to this process.
//
// Contract of every target: a q2::Error is an expected outcome (the input was rejected with a
// message); anything else that escapes (another exception, a crash, a sanitizer report, a
// leak, an allocation over libFuzzer's -malloc_limit_mb) is a finding.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

namespace q2::fuzz {

// A fresh directory for this process (under $Q2_FUZZ_TMPDIR if set, else /dev/shm when there is
// one, else the temporary directory), removed at exit.
const std::string& work_dir();

// Writes `size` bytes to work_dir()/name and returns the path.
std::string write_input(const std::string& name, const uint8_t* data, size_t size);
std::string write_input(const std::string& name, const std::string& bytes);

// Called with each expected rejection; prints it when Q2_FUZZ_VERBOSE is set (to see why a
// seed is rejected: build-fuzz/fuzz/npy_fuzz FILE).
void rejected(const std::exception& e);

}  // namespace q2::fuzz
