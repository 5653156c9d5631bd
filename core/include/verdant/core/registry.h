// verdant/core/registry.h
//
// Registry<T>: create plug-in components by name. Built-ins and plug-ins
// register explicitly (no static-initialiser magic, STYLE.md rule 5).
//   Registry<Strategy> reg("strategy");
//   reg.Register("fedavg", [](const OptionMap& o) { return MakeFedAvg(o); });
//   auto s = reg.Create("fedavg", options);   // unknown names list the known
// Thread-safety: register at start-up; Create is safe for concurrent callers
// once registration is done.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "verdant/core/options.h"
#include "verdant/core/status.h"

namespace verdant {

template <typename T>
class Registry {
 public:
  using Factory = std::function<Result<std::unique_ptr<T>>(const OptionMap&)>;

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // kAlreadyExists if the name is taken.
  Status Register(const std::string& name, Factory factory) {
    if (factories_.count(name)) return Status(StatusCode::kAlreadyExists, kind_ + " '" + name + "' is already registered");
    factories_[name] = std::move(factory);
    return OkStatus();
  }

  // kInvalidArgument naming the registered names when `name` is unknown;
  // whatever the factory returns otherwise.
  Result<std::unique_ptr<T>> Create(const std::string& name, const OptionMap& options) const {
    auto it = factories_.find(name);
    if (it == factories_.end()) {
      return InvalidArgumentError("unknown " + kind_ + " '" + name + "'; registered: " + JoinedNames());
    }
    return it->second(options);
  }

  bool Contains(const std::string& name) const { return factories_.count(name) != 0; }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : factories_) out.push_back(k);
    return out;
  }
  std::string JoinedNames() const {
    std::string s;
    for (const auto& [k, v] : factories_) s += (s.empty() ? "" : ", ") + k;
    return s;
  }

 private:
  std::string kind_;
  std::map<std::string, Factory> factories_;
};

}  // namespace verdant
