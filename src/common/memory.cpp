#include "common/memory.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace q2 {

int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  const std::string factors = std::to_string(a) + " x " + std::to_string(b);
  if (a < 0 || b < 0) throw Error(what + ": " + factors + " is a negative size");
  int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) throw Error(what + ": " + factors + " overflows a 64-bit integer");
  return product;
}

uint64_t available_host_memory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    std::istringstream fields(line);
    std::string key, unit;
    uint64_t kib = 0;
    if (fields >> key >> kib >> unit && key == "MemAvailable:" && unit == "kB") return kib * 1024;
  }
  // No /proc (or a kernel before 3.14): free pages alone, which ignores reclaimable caches.
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

void require_host_memory(uint64_t bytes, const std::string& what) {
  const uint64_t available = available_host_memory();
  if (bytes > available)
    throw Error(what + " needs " + format_bytes(bytes) + " of memory, but only " + format_bytes(available) +
                " is available");
}

std::string format_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  constexpr int kFirstWithDecimals = 3;
  for (int u = 0;; ++u) {
    const double value = std::ldexp(static_cast<double>(bytes), -10 * u);
    // The value as printed, so that 1023.999 MiB becomes "1.00 GiB" rather than "1024 MiB".
    const double shown = u < kFirstWithDecimals ? std::round(value) : std::round(value * 100) / 100;
    if (shown < 1024 || u == 6) {
      char s[32];
      std::snprintf(s, sizeof s, u < kFirstWithDecimals ? "%.0f %s" : "%.2f %s", shown, kUnits[u]);
      return s;
    }
  }
}

}  // namespace q2
