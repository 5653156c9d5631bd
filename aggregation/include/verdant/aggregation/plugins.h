// verdant/aggregation/plugins.h
//
// Binds the aggregation registries to a PluginHost, so plug-ins loaded with
// LoadPlugin can add strategies ("strategy"), aggregators ("aggregator") and
// server optimizers ("server_optimizer").
//   verdant::PluginHost host;
//   VERDANT_RETURN_IF_ERROR(verdant::RegisterAggregationPluginKinds(host));
//   VERDANT_RETURN_IF_ERROR(verdant::LoadPlugin(path, host));
//   auto s = verdant::CreateStrategy("clipmean", options);
// Thread-safety: call at start-up, from one thread.
#pragma once

#include "verdant/core/plugin.h"
#include "verdant/core/status.h"

namespace verdant {

// kAlreadyExists if one of the kinds is already bound on `host`.
Status RegisterAggregationPluginKinds(PluginHost& host);

}  // namespace verdant
