// tests/aggregation/plugins/test_plugin.cc
//
// Deliberately broken plug-ins for plugin_test.cc, one source compiled
// several times (examples/examples.cmake):
//   VERDANT_TEST_PLUGIN_MODE=1  exports a wrong ABI version
//   VERDANT_TEST_PLUGIN_MODE=2  exports no entry point at all
//   VERDANT_TEST_PLUGIN_MODE=3  registers under an unknown kind and reports an error
//   VERDANT_TEST_PLUGIN_MODE=4  registers a strategy factory under kind "aggregator"
#include "verdant/aggregation/strategy.h"
#include "verdant/core/plugin.h"

namespace {
[[maybe_unused]] verdant::Result<std::unique_ptr<verdant::Strategy>> MakeNothing(const verdant::OptionMap&) {
  return verdant::UnimplementedError("test plug-in");
}
}  // namespace

#if VERDANT_TEST_PLUGIN_MODE == 1
VERDANT_PLUGIN_EXPORT uint32_t verdant_plugin_abi_version(void) { return VERDANT_PLUGIN_ABI_VERSION + 41; }
VERDANT_PLUGIN_EXPORT int verdant_plugin_register(const VerdantPluginHost*) { return 0; }
#elif VERDANT_TEST_PLUGIN_MODE == 2
VERDANT_PLUGIN_EXPORT int not_a_verdant_entry_point(void) { return MakeNothing({}).ok() ? 1 : 0; }
#elif VERDANT_TEST_PLUGIN_MODE == 3
VERDANT_PLUGIN_DEFINE_ABI_VERSION()
VERDANT_PLUGIN_EXPORT int verdant_plugin_register(const VerdantPluginHost* host) {
  int rc = verdant::RegisterPluginFactory<verdant::Strategy>(host, "teleporter", "beam", &MakeNothing);
  host->report_error(host->context, "the test plug-in gives up");
  return rc != 0 ? rc : 7;
}
#elif VERDANT_TEST_PLUGIN_MODE == 4
VERDANT_PLUGIN_DEFINE_ABI_VERSION()
VERDANT_PLUGIN_EXPORT int verdant_plugin_register(const VerdantPluginHost* host) {
  return verdant::RegisterPluginFactory<verdant::Strategy>(host, "aggregator", "wrongtype", &MakeNothing);
}
#endif
