// Private helpers for reading Linux sysfs-style attribute files and parsing
// text. Not part of the public API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

namespace verdant::energy::internal {

// The file's content with surrounding whitespace trimmed (at most 64 KiB).
// kNotFound: missing; kPermissionDenied: EACCES/EPERM; kDataLoss: a
// directory where a file was expected or a read error. Never throws.
Result<std::string> ReadAttribute(const std::filesystem::path& p);
// ReadAttribute parsed as an unsigned / signed decimal integer; kDataLoss if
// the text is not one.
Result<uint64_t> ReadUintAttribute(const std::filesystem::path& p);
Result<int64_t> ReadIntAttribute(const std::filesystem::path& p);

std::string_view Trim(std::string_view s);
// Strict number parsing of the whole (trimmed) string.
bool ParseDouble(std::string_view s, double* out);
bool ParseInt64(std::string_view s, int64_t* out);
bool ParseUint64(std::string_view s, uint64_t* out);
std::string ToLower(std::string_view s);

// Splits one CSV record (RFC 4180 quoting: "a,b" and "" inside quotes).
std::vector<std::string> SplitCsvLine(std::string_view line);

// Formats a double compactly and round-trippably for CSV/JSON ("%.17g"
// trimmed to the shortest that round-trips).
std::string FormatDouble(double v);
// Quotes a CSV field if it contains a comma, quote or newline.
std::string CsvField(std::string_view s);

}  // namespace verdant::energy::internal
