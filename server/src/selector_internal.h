// Helpers shared by the selector implementations (server/src only).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"
#include "verdant/server/selector.h"

namespace verdant::selector_internal {

// Indices of `c` sorted by client id, then shuffled: an order that depends on
// the seed, not on the order the clients arrived in. Sorting a copy of this
// order stably by a score breaks ties at random.
std::vector<size_t> ShuffledOrder(std::span<const ClientCandidate> c, Rng& rng);

// `k` distinct indices of `weights`, drawn one at a time with probability
// proportional to the weight among those not yet drawn (uniformly when all
// remaining weights are zero). Negative weights count as zero.
std::vector<size_t> WeightedSample(std::span<const double> weights, size_t k, Rng& rng);

// Number formatting for reasons: "%.4g"; durations as "1h50m", "5m", "30s".
std::string Num(double v);
std::string HumanDuration(Duration d);

// Typed option readers that check a range and name the key in their error.
Result<double> ReadDouble(const OptionMap& o, const std::string& key, double fallback, double lo,
                          double hi, bool lo_open = false, bool hi_open = false);

}  // namespace verdant::selector_internal
