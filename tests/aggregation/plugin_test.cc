// Plug-in loading: the example strategy plug-in loads and runs; a missing
// file, a library without the entry points, an ABI version mismatch, an
// unknown kind and a factory of the wrong interface are clear errors.
// The plug-in libraries are built by examples/examples.cmake.
#include <doctest/doctest.h>

#include "verdant/aggregation/plugins.h"
#include "verdant/aggregation/strategy.h"
#include "verdant/core/plugin.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

#ifdef VERDANT_TEST_PLUGIN_DIR
static std::string PluginPath(const std::string& name) {
  return std::string(VERDANT_TEST_PLUGIN_DIR) + "/lib" + name + ".so";
}

// One host for the whole suite: registries are process-wide, and so are kinds.
static PluginHost& Host() {
  static PluginHost* host = [] {
    auto* h = new PluginHost;
    RegisterAggregationPluginKinds(*h).IgnoreError();
    return h;
  }();
  return *host;
}

TEST_CASE("The example strategy plug-in loads, registers and aggregates") {
  Status st = LoadPlugin(PluginPath("verdant_clipped_mean"), Host());
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  CHECK(LoadPlugin(PluginPath("verdant_clipped_mean"), Host()).ok());  // second load: no-op
  CHECK(Host().loaded().size() == 1);
  CHECK(StrategyRegistry().Contains("clippedmean"));
  auto bad = CreateStrategy("clippedmean", {{"clip_norm", "-1"}});
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  auto s = CreateStrategy("clippedmean", {{"clip_norm", "1"}});
  REQUIRE(s.ok());
  CHECK((*s)->Name() == "clippedmean");
  ParameterVector global = ParameterVector::Flat({0, 0});
  std::vector<float> a{3, 4}, b{0.3f, 0.4f};  // norms 5 and 0.5
  REQUIRE((*s)->BeginRound(1, global).ok());
  REQUIRE((*s)->AddResult({"a", 1, 0, UpdateView::Floats(a)}).ok());
  REQUIRE((*s)->AddResult({"b", 1, 0, UpdateView::Floats(b)}).ok());
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  // a clipped to (0.6, 0.8); mean with b = (0.45, 0.6).
  CHECK((**next).values()[0] == doctest::Approx(0.45));
  CHECK((**next).values()[1] == doctest::Approx(0.6));
  CHECK((*s)->RoundMetrics().at("clipped_updates") == 1);
}

TEST_CASE("Plug-in errors: missing file, not a plug-in, ABI mismatch, bad registrations") {
  Status missing = LoadPlugin("/nonexistent/libnothing.so", Host());
  CHECK(missing.code() == StatusCode::kNotFound);
  CHECK(missing.message().find("no such file") != std::string::npos);

  testing::TempDir dir;
  testing::WriteFile(dir.path() / "libfake.so", "not an ELF file");
  Status not_elf = LoadPlugin((dir.path() / "libfake.so").string(), Host());
  CHECK(not_elf.code() == StatusCode::kInvalidArgument);
  CHECK(not_elf.message().find("cannot load") != std::string::npos);

  Status abi = LoadPlugin(PluginPath("verdant_test_plugin_1"), Host());
  CHECK(abi.code() == StatusCode::kFailedPrecondition);
  CHECK(abi.message().find("ABI version " + std::to_string(VERDANT_PLUGIN_ABI_VERSION + 41)) != std::string::npos);
  CHECK(abi.message().find("rebuild") != std::string::npos);

  Status no_symbol = LoadPlugin(PluginPath("verdant_test_plugin_2"), Host());
  CHECK(no_symbol.code() == StatusCode::kInvalidArgument);
  CHECK(no_symbol.message().find("verdant_plugin_abi_version") != std::string::npos);

  Status unknown_kind = LoadPlugin(PluginPath("verdant_test_plugin_3"), Host());
  CHECK(unknown_kind.code() == StatusCode::kAborted);
  CHECK(unknown_kind.message().find("teleporter") != std::string::npos);
  CHECK(unknown_kind.message().find("strategy") != std::string::npos);  // lists the accepted kinds
  CHECK(unknown_kind.message().find("gives up") != std::string::npos);

  Status wrong_type = LoadPlugin(PluginPath("verdant_test_plugin_4"), Host());
  CHECK(wrong_type.code() == StatusCode::kAborted);
  CHECK(wrong_type.message().find("interface type") != std::string::npos);
  CHECK_FALSE(AggregatorRegistry().Contains("wrongtype"));
}
#endif

TEST_CASE("Plug-in kinds bind once") {
  PluginHost host;
  REQUIRE(RegisterAggregationPluginKinds(host).ok());
  CHECK(host.Kinds() == std::vector<std::string>{"aggregator", "server_optimizer", "strategy"});
  CHECK(RegisterAggregationPluginKinds(host).code() == StatusCode::kAlreadyExists);
}
