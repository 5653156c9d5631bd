#include "verdant/core/plugin.h"

#include <dlfcn.h>

#include <filesystem>
#include <system_error>

namespace verdant {

#ifndef VERDANT_VERSION_STRING
#define VERDANT_VERSION_STRING "0.1.0"
#endif

Status PluginHost::AddKind(const std::string& kind, std::string type_name, KindHandler handler) {
  if (kinds_.count(kind)) {
    return Status(StatusCode::kAlreadyExists, "plug-in kind '" + kind + "' is already bound");
  }
  kinds_[kind] = Kind{std::move(type_name), std::move(handler)};
  return OkStatus();
}

std::vector<std::string> PluginHost::Kinds() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : kinds_) out.push_back(k);
  return out;
}

// C callbacks handed to the plug-in. They never throw across the C boundary.
int PluginRegisterThunk(void* context, const char* kind, const char* type_name, const char* name,
                        VerdantFactoryFn factory) {
  auto* host = static_cast<PluginHost*>(context);
  try {
    if (kind == nullptr || type_name == nullptr || name == nullptr || factory == nullptr) {
      host->errors_.push_back("register_factory called with a null argument");
      return 1;
    }
    auto it = host->kinds_.find(kind);
    if (it == host->kinds_.end()) {
      std::string known;
      for (const auto& [k, v] : host->kinds_) known += (known.empty() ? "" : ", ") + k;
      host->errors_.push_back("unknown plug-in kind '" + std::string(kind) + "' for '" + name +
                              "'; this host accepts: " + (known.empty() ? "(none)" : known));
      return 1;
    }
    if (it->second.type_name != type_name) {
      std::string msg = "factory '";
      msg.append(name).append("' registered as a ").append(kind);
      msg.append(" has interface type ").append(type_name);
      msg.append(", expected ").append(it->second.type_name);
      host->errors_.push_back(std::move(msg));
      return 1;
    }
    Status st = it->second.handler(name, factory);
    if (!st.ok()) {
      host->errors_.push_back(st.message());
      return 1;
    }
    std::string entry(kind);
    entry.append(" '").append(name).append("'");
    host->registered_.push_back(std::move(entry));
    return 0;
  } catch (const std::exception& e) {
    host->errors_.push_back(std::string("registration failed: ") + e.what());
    return 1;
  } catch (...) {
    host->errors_.push_back("registration failed");
    return 1;
  }
}

void PluginReportErrorThunk(void* context, const char* message) {
  auto* host = static_cast<PluginHost*>(context);
  try {
    host->errors_.push_back(message != nullptr ? message : "(null message)");
  } catch (...) {
  }
}

Status LoadPlugin(const std::string& path, PluginHost& host) {
  const std::string what = "plug-in '" + path + "'";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFoundError(what + ": no such file");
  std::string canonical = std::filesystem::weakly_canonical(path, ec).string();
  if (ec) canonical = path;
  for (const auto& p : host.loaded_) {
    if (p == canonical) return OkStatus();
  }
  // RTLD_LOCAL: the plug-in's own symbols do not leak into the global scope;
  // RTLD_NOW: unresolved symbols fail here, not later mid-run.
  dlerror();
  void* handle = dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return InvalidArgumentError(what + ": cannot load: " + (err != nullptr ? err : "unknown error"));
  }
  // From here on the handle is never closed on success (factories and vtables
  // live in it); on failure it is closed before returning.
  struct Closer {
    void* h;
    bool keep = false;
    ~Closer() {
      if (!keep) dlclose(h);
    }
  } closer{handle};

  auto abi_fn = reinterpret_cast<VerdantPluginAbiFn>(dlsym(handle, VERDANT_PLUGIN_ABI_SYMBOL));
  if (abi_fn == nullptr) {
    return InvalidArgumentError(what + " is not a Verdant plug-in: it does not export '" +
                                VERDANT_PLUGIN_ABI_SYMBOL +
                                "' (use VERDANT_PLUGIN_DEFINE_ABI_VERSION() from "
                                "verdant/core/plugin.h)");
  }
  auto register_fn =
      reinterpret_cast<VerdantPluginRegisterFn>(dlsym(handle, VERDANT_PLUGIN_REGISTER_SYMBOL));
  if (register_fn == nullptr) {
    return InvalidArgumentError(what + " is not a Verdant plug-in: it does not export '" +
                                VERDANT_PLUGIN_REGISTER_SYMBOL + "'");
  }
  const uint32_t abi = abi_fn();
  if (abi != VERDANT_PLUGIN_ABI_VERSION) {
    return FailedPreconditionError(what + " was built for plug-in ABI version " +
                                   std::to_string(abi) + ", this Verdant (" +
                                   VERDANT_VERSION_STRING + ") has ABI version " +
                                   std::to_string(VERDANT_PLUGIN_ABI_VERSION) +
                                   "; rebuild the plug-in against this Verdant");
  }
  VerdantPluginHost c_host{};
  c_host.abi_version = VERDANT_PLUGIN_ABI_VERSION;
  c_host.struct_size = sizeof(VerdantPluginHost);
  c_host.verdant_version = VERDANT_VERSION_STRING;
  c_host.context = &host;
  c_host.register_factory = &PluginRegisterThunk;
  c_host.report_error = &PluginReportErrorThunk;
  host.errors_.clear();
  host.registered_.clear();
  int rc = 0;
  try {
    rc = register_fn(&c_host);
  } catch (const std::exception& e) {
    host.errors_.push_back(std::string("threw: ") + e.what());
    rc = -1;
  } catch (...) {
    host.errors_.push_back("threw an exception");
    rc = -1;
  }
  if (rc != 0 || !host.errors_.empty()) {
    std::string msg = what + ": registration failed (code " + std::to_string(rc) + ")";
    for (const auto& e : host.errors_) msg += "; " + e;
    // Factories already registered point into this library: keep it loaded.
    closer.keep = !host.registered_.empty();
    return AbortedError(msg);
  }
  closer.keep = true;
  host.loaded_.push_back(canonical);
  return OkStatus();
}

}  // namespace verdant
