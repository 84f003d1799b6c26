#pragma once
// Raw text into documents.
//
// `spec` is "gcide" (Debian's dict-gcide: /usr/share/dictd/gcide.dict.dz) or a path: a text
// file, a .gz/.dz (gzip) or .zst file, or a directory, read recursively in sorted path order with
// files holding a NUL byte (binary) skipped. Every file is split the same way: a document starts
// at a line beginning with a non-blank character that follows a blank (whitespace-only) line. In
// gcide that is exactly one dictionary entry per document (an entry's inner blank lines are
// followed by indented lines); in prose it is a paragraph, in source code roughly a top-level
// definition. Blank lines around documents are dropped; lines keep their own text.
//
// A compressed file cut short (or a .gz that is not gzip) is an error, never a partial corpus.
//
// Bytes that are not valid UTF-8 are read as Windows-1252 (how stray bytes in English text are
// almost always meant), so every document is valid UTF-8 and its byte count is exact.
#include <cstdint>
#include <string>
#include <vector>

namespace q2::data {

inline constexpr const char* kGcidePath = "/usr/share/dictd/gcide.dict.dz";

// max_bytes > 0: reads no more than that many bytes of text (after decompression) in all, and
// drops the document at the cut, which may continue past it. A comma-separated spec reads
// several corpora in order (e.g. "gcide,/usr/src/linux"), their documents concatenated.
std::vector<std::string> read_corpus(const std::string& spec, uint64_t max_bytes = 0);

// The splitting rule above, on one file's (already valid UTF-8) text.
std::vector<std::string> split_documents(const std::string& text);

// `bytes` with every invalid UTF-8 byte replaced by its Windows-1252 character.
std::string to_valid_utf8(const std::string& bytes);

}  // namespace q2::data
