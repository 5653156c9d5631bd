// verdant/core/options.h
//
// OptionMap: string key/value options for components created by name, as
// they arrive from a TOML table or CLI flags. Typed getters validate once and
// name the key in their error; Unused() reports typos.
//   OptionMap o({{"server_lr", "0.01"}});
//   auto lr = o.GetDouble("server_lr", 1.0);   // Result<double>
//   VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("fedadam"));
// Thread-safety: not thread-safe (getters record which keys were read).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

class OptionMap {
 public:
  OptionMap() = default;
  explicit OptionMap(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  OptionMap(std::initializer_list<std::pair<const std::string, std::string>> values)
      : values_(values) {}

  void Set(const std::string& key, std::string value) { values_[key] = std::move(value); }
  bool Has(const std::string& key) const { return values_.count(key) != 0; }
  const std::map<std::string, std::string>& values() const { return values_; }

  Result<std::string> GetString(const std::string& key, std::string fallback) const;
  Result<double> GetDouble(const std::string& key, double fallback) const;
  Result<int64_t> GetInt(const std::string& key, int64_t fallback) const;
  Result<bool> GetBool(const std::string& key, bool fallback) const;
  // kInvalidArgument naming the unknown keys (likely typos) for `component`.
  Status CheckAllUsed(std::string_view component) const;

 private:
  std::map<std::string, std::string> values_;
  mutable std::set<std::string> used_;
};

// "name:arg" -> {"name", "arg"}; "name" -> {"name", ""}.
std::pair<std::string, std::string> SplitSpec(std::string_view spec);
// Comma-separated list, trimmed, empty items dropped.
std::vector<std::string> SplitList(std::string_view list, char sep = ',');

}  // namespace verdant
