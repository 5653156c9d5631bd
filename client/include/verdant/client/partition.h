// verdant/client/partition.h
//
// Partitioners: which examples of a shared dataset each federated client
// trains on. Every client computes the same global split from (spec, labels,
// num_clients, seed) and keeps its own shard, so n clients (real or
// simulated) get disjoint shards that together cover every example exactly
// once, with no coordination.
//   auto idx = PartitionIndices("dirichlet:0.5", train.labels, 10,
//                               /*num_clients=*/100, /*client_index=*/7, seed);
//   if (!idx.ok()) return idx.status();
//   Dataset shard = Subset(train, *idx);
// Results depend only on verdant::Rng, so they are identical on every
// platform and compiler.
// Thread-safety: reentrant (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

// The indices (ascending) of the examples that client `client_index` of
// `num_clients` trains on.
//   "iid":              a seeded shuffle split into n near-equal shards
//                       (sizes differ by at most one).
//   "dirichlet:<alpha>": label-skew non-IID (Hsu et al. 2019; the
//                       "noniid-labeldir" split of NIID-Bench): for each
//                       class, proportions p ~ Dirichlet(alpha, ..., alpha)
//                       over the clients, with a client's share zeroed once
//                       it holds N/n examples (keeps sizes bounded), and the
//                       class's examples dealt out in those proportions.
//                       Smaller alpha = more skew (0.1 strong, 100 ~ iid).
//                       The split is redrawn (up to 20 times) until every
//                       client holds at least min(10, N/n) examples; if no
//                       draw achieves that, examples move from the largest
//                       shards to the smallest until it holds.
// Errors (kInvalidArgument): malformed spec, alpha <= 0 or not finite,
// num_clients == 0, client_index >= num_clients, num_classes <= 0, a label
// >= num_classes (dirichlet), or fewer examples than clients.
Result<std::vector<size_t>> PartitionIndices(std::string_view spec, std::span<const uint8_t> labels,
                                             int num_classes, size_t num_clients,
                                             size_t client_index, uint64_t seed);

// Every client's shard at once (result[i] == PartitionIndices(..., i, seed)),
// for callers that host many clients, such as the simulator: one pass
// instead of one per client. Same errors, minus the client_index check.
Result<std::vector<std::vector<size_t>>> PartitionAllIndices(std::string_view spec,
                                                             std::span<const uint8_t> labels,
                                                             int num_classes, size_t num_clients,
                                                             uint64_t seed);

}  // namespace verdant
