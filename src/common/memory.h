#pragma once
// Sizes checked before anything is allocated, so a huge or overflowing size ends as an Error
// naming what asked for it instead of a crash or std::bad_alloc.
#include <cstdint>
#include <string>

namespace q2 {

// a * b; an Error naming `what` and both factors when the product overflows int64 or is negative
// (so is any negative factor: these are sizes).
int64_t checked_mul(int64_t a, int64_t b, const std::string& what);

// Bytes of memory this process can still get (MemAvailable from /proc/meminfo; sysconf as a fallback).
uint64_t available_host_memory();

// Throws an Error naming `what`, the amount asked for and the amount available (both via format_bytes)
// when `bytes` exceeds available_host_memory().
void require_host_memory(uint64_t bytes, const std::string& what);

// Binary units: whole numbers up to MiB, two decimals from GiB up ("7 B", "12 KiB", "512 MiB",
// "1.50 GiB").
std::string format_bytes(uint64_t bytes);

}  // namespace q2
