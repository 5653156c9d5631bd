#include "verdant/core/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace verdant {

Result<std::string> OptionMap::GetString(const std::string& key, std::string fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  used_.insert(key);
  return it->second;
}

Result<double> OptionMap::GetDouble(const std::string& key, double fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  used_.insert(key);
  const char* s = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (end == s || *end != '\0' || errno != 0 || !std::isfinite(v)) {
    return InvalidArgumentError("option '" + key + "': '" + it->second + "' is not a finite number");
  }
  return v;
}

Result<int64_t> OptionMap::GetInt(const std::string& key, int64_t fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  used_.insert(key);
  const char* s = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || errno != 0) {
    return InvalidArgumentError("option '" + key + "': '" + it->second + "' is not an integer");
  }
  return static_cast<int64_t>(v);
}

Result<bool> OptionMap::GetBool(const std::string& key, bool fallback) const {
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  used_.insert(key);
  const std::string& v = it->second;
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  return InvalidArgumentError("option '" + key + "': '" + v + "' is not a boolean");
}

Status OptionMap::CheckAllUsed(std::string_view component) const {
  std::string unknown;
  for (const auto& [k, v] : values_) {
    if (used_.count(k)) continue;
    if (!unknown.empty()) unknown += ", ";
    unknown += k;
  }
  if (unknown.empty()) return OkStatus();
  return InvalidArgumentError("unknown option(s) for " + std::string(component) + ": " + unknown);
}

std::pair<std::string, std::string> SplitSpec(std::string_view spec) {
  auto pos = spec.find(':');
  if (pos == std::string_view::npos) return {std::string(spec), ""};
  return {std::string(spec.substr(0, pos)), std::string(spec.substr(pos + 1))};
}

std::vector<std::string> SplitList(std::string_view list, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(sep, start);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(start, end - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = end + 1;
  }
  return out;
}

}  // namespace verdant
