// examples/custom_strategy/run_plugin.cc
//
// Loads a strategy plug-in and compares it with FedAvg on a synthetic
// federated task, the way `verdant demo --plugin ... --strategy ...` will:
//   run_strategy_plugin build/examples/libverdant_clipped_mean.so clippedmean [key=value ...]
// Task: 10 clients each hold a noisy view of a hidden target vector; each
// round a client's delta is (target - global) * 0.5 + noise; clients 8 and 9
// are adversarial and send that delta scaled by 1e4. The program prints the
// distance to the target per round for FedAvg and the plug-in, and exits
// non-zero if the plug-in fails to load or its model is not finite.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "verdant/aggregation/plugins.h"
#include "verdant/aggregation/strategy.h"
#include "verdant/core/plugin.h"
#include "verdant/core/rng.h"

using namespace verdant;

static double Distance(std::span<const float> a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < b.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

// Runs `rounds` rounds of `strategy`; returns the final distance to target
// (NaN if the model went non-finite).
static double Run(Strategy& strategy, int rounds, bool print) {
  const size_t dim = 1000;
  Rng rng(7);
  std::vector<float> target(dim);
  for (auto& t : target) t = static_cast<float>(rng.Normal());
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.0f));
  for (int round = 1; round <= rounds; ++round) {
    (void)strategy.ConfigureTrain(round, global);
    if (!strategy.BeginRound(round, global).ok()) return NAN;
    std::vector<std::vector<float>> deltas(10, std::vector<float>(dim));
    for (int c = 0; c < 10; ++c) {
      for (size_t i = 0; i < dim; ++i) {
        float d = 0.5f * (target[i] - global.values()[i]) + 0.01f * float(rng.Normal());
        deltas[c][i] = c >= 8 ? d * 1e4f : d;
      }
      ClientResult r{"c" + std::to_string(c), 100, 0.0, UpdateView::Floats(deltas[c])};
      Status st = strategy.AddResult(r);
      if (!st.ok()) std::printf("  client %d rejected: %s\n", c, st.ToString().c_str());
    }
    auto next = strategy.FinishRound(round, global, {});
    if (!next.ok()) {
      std::printf("  round %d failed: %s\n", round, next.status().ToString().c_str());
      return NAN;
    }
    if (next->has_value()) global = std::move(**next);
    if (!global.AllFinite()) return NAN;
    if (print) std::printf("  %-12s round %d: distance to target %.4g\n",
                           std::string(strategy.Name()).c_str(), round, Distance(global.values(), target));
  }
  return Distance(global.values(), target);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PLUGIN.so STRATEGY [key=value ...]\n", argv[0]);
    return 2;
  }
  PluginHost host;
  Status st = RegisterAggregationPluginKinds(host);
  if (st.ok()) st = LoadPlugin(argv[1], host);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  OptionMap options;
  for (int i = 3; i < argc; ++i) {
    std::string kv = argv[i];
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "bad option '%s' (want key=value)\n", argv[i]);
      return 2;
    }
    options.Set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  auto plugin = CreateStrategy(argv[2], options);
  if (!plugin.ok()) {
    std::fprintf(stderr, "%s\n", plugin.status().ToString().c_str());
    return 1;
  }
  auto fedavg = CreateStrategy("fedavg", {});
  if (!fedavg.ok()) return 1;
  std::printf("plug-in %s loaded; strategies: %s\n", argv[1], StrategyRegistry().JoinedNames().c_str());
  const int rounds = 5;
  double d_plugin = Run(**plugin, rounds, true);
  double d_fedavg = Run(**fedavg, rounds, true);
  std::printf("after %d rounds with 2 of 10 clients scaled by 1e4: %s %.4g, fedavg %.4g\n", rounds,
              argv[2], d_plugin, d_fedavg);
  if (!std::isfinite(d_plugin)) {
    std::fprintf(stderr, "the plug-in's model is not finite\n");
    return 1;
  }
  return 0;
}
