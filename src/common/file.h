#pragma once
#include <string>

namespace q2 {

// Writes to a temporary name beside `path`, fsyncs, then renames: readers never see a
// partial file, and a crash leaves the old one intact.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace q2
