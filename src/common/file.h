#pragma once
#include <string>

namespace q2 {

// Writes to a temporary name beside `path` (path + ".tmp." + pid), fsyncs, then renames:
// readers never see a partial file, and a crash leaves the old one intact. A folder at `path` or
// a missing parent folder is an error naming `path`.
void write_file_atomic(const std::string& path, const std::string& bytes);

// True for the temporary names write_file_atomic uses ("<name>.tmp.<digits>"): left behind only
// by a process killed while writing.
bool is_atomic_write_temp(const std::string& filename);

}  // namespace q2
