#include "verdant/aggregation/plugins.h"

#include "verdant/aggregation/aggregator.h"
#include "verdant/aggregation/server_optimizer.h"
#include "verdant/aggregation/strategy.h"

namespace verdant {

Status RegisterAggregationPluginKinds(PluginHost& host) {
  VERDANT_RETURN_IF_ERROR(host.AddRegistry<Strategy>("strategy", StrategyRegistry()));
  VERDANT_RETURN_IF_ERROR(host.AddRegistry<Aggregator>("aggregator", AggregatorRegistry()));
  VERDANT_RETURN_IF_ERROR(
      host.AddRegistry<ServerOptimizer>("server_optimizer", ServerOptimizerRegistry()));
  return OkStatus();
}

}  // namespace verdant
