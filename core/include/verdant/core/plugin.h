// verdant/core/plugin.h
//
// Plug-ins: shared libraries that add named components (strategies today;
// selectors and codecs later) to Verdant's registries without rebuilding
// Verdant. A plug-in exports two C functions,
//   extern "C" uint32_t verdant_plugin_abi_version(void);   // VERDANT_PLUGIN_ABI_VERSION
//   extern "C" int verdant_plugin_register(const VerdantPluginHost* host);
// and registers C++ factories through the host:
//   VERDANT_PLUGIN_EXPORT int verdant_plugin_register(const VerdantPluginHost* host) {
//     return verdant::RegisterPluginFactory<verdant::Strategy>(host, "strategy", "clipmean",
//                                                              &MakeClipMean);
//   }
// On the host side:
//   verdant::PluginHost host;
//   VERDANT_RETURN_IF_ERROR(RegisterAggregationPluginKinds(host));   // "strategy", ...
//   VERDANT_RETURN_IF_ERROR(verdant::LoadPlugin("libclipmean.so", host));
//
// ABI: the entry points are C, but the factories are C++ functions returning
// Verdant types, so a plug-in must be built against the same Verdant headers
// with the same compiler ABI; VERDANT_PLUGIN_ABI_VERSION is bumped whenever an
// interface a plug-in can implement changes, and a mismatch is refused before
// the plug-in's code runs. Each factory also carries its interface's type
// name, so a factory registered under the wrong kind is refused. Loaded
// libraries stay loaded for the life of the process (their factories and
// vtables are in use).
// Thread-safety: load plug-ins at start-up, from one thread, before any
// registry is used concurrently.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"
#endif

// Bump whenever Strategy, Aggregator, ServerOptimizer, UpdateCodec,
// ClientSelector, OptionMap, Status/Result or this header change layout.
#define VERDANT_PLUGIN_ABI_VERSION 1u

#define VERDANT_PLUGIN_ABI_SYMBOL "verdant_plugin_abi_version"
#define VERDANT_PLUGIN_REGISTER_SYMBOL "verdant_plugin_register"

#ifdef __cplusplus
#define VERDANT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))
extern "C" {
#else
#define VERDANT_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

// A type-erased C++ factory (see RegisterPluginFactory).
typedef void (*VerdantFactoryFn)(void);

// What the host hands the plug-in's register function. Fields are only ever
// appended; `struct_size` tells the plug-in which exist.
typedef struct VerdantPluginHost {
  uint32_t abi_version;         // the host's VERDANT_PLUGIN_ABI_VERSION
  uint32_t struct_size;         // sizeof(VerdantPluginHost) in the host
  const char* verdant_version;  // e.g. "0.1.0"
  void* context;                // opaque; pass back to the callbacks
  // Registers `factory` (whose interface has type name `type_name`, i.e.
  // typeid(T).name()) as a component of `kind` named `name`. 0 on success;
  // otherwise non-zero, and the host keeps the reason for its error message.
  int (*register_factory)(void* context, const char* kind, const char* type_name,
                          const char* name, VerdantFactoryFn factory);
  // Lets the plug-in say why it refuses to load (before returning non-zero).
  void (*report_error)(void* context, const char* message);
} VerdantPluginHost;

typedef uint32_t (*VerdantPluginAbiFn)(void);
typedef int (*VerdantPluginRegisterFn)(const VerdantPluginHost* host);

#ifdef __cplusplus
}  // extern "C"

// Defines verdant_plugin_abi_version() in a plug-in; put it in one .cc.
#define VERDANT_PLUGIN_DEFINE_ABI_VERSION()                                        \
  VERDANT_PLUGIN_EXPORT uint32_t verdant_plugin_abi_version(void) {                \
    return VERDANT_PLUGIN_ABI_VERSION;                                             \
  }

namespace verdant {

// The factory signature a plug-in implements for interface T.
template <typename T>
using PluginFactory = Result<std::unique_ptr<T>> (*)(const OptionMap&);

// Plug-in side: registers `factory` for interface T under kind/name. Returns
// the host callback's result (0 = ok), or -1 when the host is too old.
template <typename T>
int RegisterPluginFactory(const VerdantPluginHost* host, const char* kind, const char* name,
                          PluginFactory<T> factory) {
  if (host == nullptr || host->abi_version != VERDANT_PLUGIN_ABI_VERSION) return -1;
  return host->register_factory(host->context, kind, typeid(T).name(), name,
                                reinterpret_cast<VerdantFactoryFn>(factory));
}

// Host side: the kinds a plug-in may register, each bound to a registry, and
// the plug-ins loaded so far.
class PluginHost {
 public:
  // Receives one registration: name and the type-erased factory.
  using KindHandler = std::function<Status(const std::string& name, VerdantFactoryFn factory)>;

  PluginHost() = default;
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // Binds `kind` (e.g. "strategy") to `registry` for interface T.
  // kAlreadyExists if the kind is bound.
  template <typename T>
  Status AddRegistry(const std::string& kind, Registry<T>& registry) {
    return AddKind(kind, typeid(T).name(), [&registry](const std::string& name, VerdantFactoryFn fn) {
      auto factory = reinterpret_cast<PluginFactory<T>>(fn);
      return registry.Register(name, [factory, name](const OptionMap& o) -> Result<std::unique_ptr<T>> {
        try {
          return factory(o);
        } catch (const std::exception& e) {
          return InternalError("plug-in factory '" + name + "' threw: " + e.what());
        } catch (...) {
          return InternalError("plug-in factory '" + name + "' threw");
        }
      });
    });
  }
  // Lower level: a kind with the interface type name its factories must carry.
  Status AddKind(const std::string& kind, std::string type_name, KindHandler handler);

  std::vector<std::string> Kinds() const;
  // Paths of the plug-ins loaded, in order.
  const std::vector<std::string>& loaded() const { return loaded_; }

 private:
  friend Status LoadPlugin(const std::string& path, PluginHost& host);
  struct Kind {
    std::string type_name;
    KindHandler handler;
  };
  std::map<std::string, Kind> kinds_;
  std::vector<std::string> loaded_;
  // Scratch for the C callbacks of the plug-in being loaded.
  std::vector<std::string> errors_;
  std::vector<std::string> registered_;
  friend int PluginRegisterThunk(void*, const char*, const char*, const char*, VerdantFactoryFn);
  friend void PluginReportErrorThunk(void*, const char*);
};

// Loads the shared library at `path` and runs its register function.
// kNotFound: no such file; kInvalidArgument: not loadable (dlopen's reason)
// or not a Verdant plug-in (a missing entry point, named); kFailedPrecondition:
// built for another plug-in ABI version (both versions named); kAborted: the
// plug-in's register function failed (its reasons, e.g. a duplicate name or an
// unknown kind). A library is loaded once: loading the same path again is a
// no-op. Never throws.
Status LoadPlugin(const std::string& path, PluginHost& host);

}  // namespace verdant
#endif  // __cplusplus
