#include "sysfs_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <system_error>

namespace verdant::energy::internal {
namespace {

struct FdCloser {
  void operator()(int* fd) const {
    if (fd != nullptr && *fd >= 0) ::close(*fd);
    delete fd;
  }
};

}  // namespace

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

Result<std::string> ReadAttribute(const std::filesystem::path& p) {
  std::error_code ec;
  auto st = std::filesystem::status(p, ec);
  if (ec || !std::filesystem::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory) {
      if (ec == std::errc::permission_denied) {
        return PermissionDeniedError(p.string() + ": permission denied");
      }
      return DataLossError(p.string() + ": " + ec.message());
    }
    return NotFoundError(p.string() + ": no such file");
  }
  if (std::filesystem::is_directory(st)) {
    return DataLossError(p.string() + ": is a directory, expected an attribute file");
  }
  int raw = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    int err = errno;
    if (err == EACCES || err == EPERM) {
      return PermissionDeniedError(p.string() + ": permission denied (" + std::strerror(err) + ")");
    }
    return DataLossError(p.string() + ": cannot open: " + std::strerror(err));
  }
  std::unique_ptr<int, FdCloser> fd(new int(raw));
  std::string out;
  char buf[4096];
  constexpr size_t kMax = 64 * 1024;
  while (out.size() < kMax) {
    ssize_t n = ::read(*fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      if (err == EACCES || err == EPERM) {
        return PermissionDeniedError(p.string() + ": permission denied (" + std::strerror(err) +
                                     ")");
      }
      return DataLossError(p.string() + ": read failed: " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return std::string(Trim(out));
}

bool ParseDouble(std::string_view s, double* out) {
  s = Trim(s);
  if (s.empty()) return false;
  std::string tmp(s);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(tmp.c_str(), &end);
  if (end != tmp.c_str() + tmp.size() || errno == ERANGE) return false;
  *out = v;
  return true;
}

bool ParseInt64(std::string_view s, int64_t* out) {
  s = Trim(s);
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool ParseUint64(std::string_view s, uint64_t* out) {
  s = Trim(s);
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

Result<uint64_t> ReadUintAttribute(const std::filesystem::path& p) {
  VERDANT_ASSIGN_OR_RETURN(std::string text, ReadAttribute(p));
  uint64_t v = 0;
  if (!ParseUint64(text, &v)) {
    return DataLossError(p.string() + ": expected an unsigned integer, got '" + text + "'");
  }
  return v;
}

Result<int64_t> ReadIntAttribute(const std::filesystem::path& p) {
  VERDANT_ASSIGN_OR_RETURN(std::string text, ReadAttribute(p));
  int64_t v = 0;
  if (!ParseInt64(text, &v)) {
    return DataLossError(p.string() + ": expected an integer, got '" + text + "'");
  }
  return v;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> SplitCsvLine(std::string_view line) {
  std::vector<std::string> fields;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cur.push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cur.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  fields.push_back(std::move(cur));
  return fields;
}

std::string FormatDouble(double v) {
  char buf[64];
  for (int prec = 6; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) return buf;
  }
  return buf;
}

std::string CsvField(std::string_view s) {
  if (s.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"')
      out += "\"\"";
    else
      out.push_back(c);
  }
  out += "\"";
  return out;
}

}  // namespace verdant::energy::internal
